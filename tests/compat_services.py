"""
Services written as for the original daemon, for the compatibility tests
(loaded as a --plugin): decorator callables that raise, a thread job that
stops on its abort the original's way, a transient job, progress relayed
from a called job, and calls made in the background.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from midjobs.job import Job, JobCancelledException
from midjobs.service import Service, job


class CompatService(Service):
    namespace = "compat"

    def __init__(self, middleware: Any) -> None:
        super().__init__(middleware)
        #: Fires with the job once C{compat.transient_wait} runs.
        self.transient_running: Deferred[Job] = Deferred()
        #: Fires with the argument of C{compat.note}, called in the background.
        self.noted: Deferred[Any] = Deferred()

    @job(description=lambda name=None: name.upper())
    async def described(self, job: Job, name: Any = None) -> str:
        """
        Its description callable raises without a name.
        """
        return "ran"

    @job(lock=lambda args: args[0]["lock"])
    async def locked(self, job: Job, data: dict) -> str:
        """
        Its lock callable raises without C{data["lock"]}.
        """
        return "ran"

    @job(abortable=True)
    def cancellable(self, job: Job) -> None:
        """
        Wait on C{aborted_event}, then stop the original's way.
        """
        job.set_progress(1, "waiting")
        job.aborted_event.wait()
        raise JobCancelledException()

    @job(transient=True, abortable=True)
    async def transient_wait(self, job: Job) -> None:
        """
        A transient job that runs until aborted.
        """
        self.transient_running.callback(job)
        await Deferred()

    @job()
    async def steps(self, job: Job) -> str:
        """
        Report 50 % then end.
        """
        job.set_progress(50, "half way")
        return "stepped"

    @job()
    def relay(self, job: Job) -> Any:
        """
        Call C{compat.steps} from a thread, showing its progress halved (as
        the original's system.debug_download does with job_on_progress_cb).
        """

        def halved(record: dict[str, Any]) -> None:
            job.set_progress(record["progress"]["percent"] // 2, f"inner: {record['progress']['description']}")

        inner = self.middleware.call_sync("compat.steps", job_on_progress_cb=halved)
        return inner.wait_sync(raise_error=True)

    @job()
    def in_background(self, job: Job, value: Any) -> Any:
        """
        Call C{compat.note} in the background: returns at once.
        """
        return self.middleware.call_sync("compat.note", value, background=True)

    async def note(self, value: Any) -> None:
        self.noted.callback(value)

    @job()
    async def knows_its_middleware(self, job: Job) -> bool:
        return job.middleware is self.middleware
