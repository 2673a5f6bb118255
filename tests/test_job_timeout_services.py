"""
Services for the time-limit, force-abort and waiting tests (loaded as a
--plugin): jobs that run too long, and a thread job that ignores its abort
and holds its lock until the test lets it go.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet.defer import Deferred

from midjobs.job import Job
from midjobs.service import Service, job, no_authz_required

#: The time limit of the limited jobs, in seconds.
LIMIT = 0.3


class TimeoutService(Service):
    namespace = "timeouts"

    def __init__(self, middleware: Any) -> None:
        super().__init__(middleware)
        #: Set by C{timeouts.release}: the stuck thread job may return.
        self.released = threading.Event()

    @job(timeout=LIMIT)
    async def async_forever(self, job: Job) -> None:
        """
        Wait for ever (until cancelled by the time limit).
        """
        job.set_progress(1, "waiting")
        await Deferred()

    @job(timeout=LIMIT)
    def thread_until_aborted(self, job: Job) -> str:
        """
        Block in a thread until aborted (by the time limit).
        """
        job.set_progress(1, "waiting")
        job.aborted.wait()
        return "stopped"

    @job(lock="slow")
    async def slow(self, job: Job) -> str:
        """
        Hold the lock C{slow} until aborted; no time limit of its own.
        """
        job.set_progress(1, "holding")
        await Deferred()
        return "never"

    @job(lock="slow", timeout=LIMIT)
    async def behind_slow(self, job: Job) -> str:
        """
        Take the lock C{slow} after it, and wait for ever once it runs.
        """
        job.set_progress(1, "running")
        await Deferred()
        return "never"

    @no_authz_required
    @job(lock="stuck")
    def stuck(self, job: Job) -> str:
        """
        Hold the lock C{stuck} in a thread that ignores aborts, until
        C{timeouts.release}; not abortable.  Any user may start it.
        """
        job.set_progress(1, "stuck")
        self.released.wait(30)
        return "released"

    @job(lock="stuck")
    async def after_stuck(self, job: Job) -> str:
        """
        Take the lock C{stuck} after it.
        """
        return "ran"

    async def release(self) -> None:
        """
        Let C{timeouts.stuck} return.
        """
        self.released.set()
