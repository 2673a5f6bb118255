"""
Services used only by the tests, loaded into the daemon as a --plugin module.
"""

from __future__ import annotations

import time
from typing import Any

from midjobs.errors import CallError, ValidationErrors
from midjobs.job import Job
from midjobs.service import Service, job, private


class SampleService(Service):
    namespace = "sample"

    async def echo(self, value: Any = None) -> Any:
        """
        Return C{value}.
        """
        return value

    async def add(self, a: int, b: int) -> int:
        """
        Add two integers.
        """
        return a + b

    def blocking_add(self, a: int, b: int) -> int:
        """
        Add two integers, in a thread.
        """
        return a + b

    @private
    async def secret(self) -> str:
        return "hidden"

    async def fail(self, message: str) -> None:
        raise CallError(message)

    async def invalid(self) -> None:
        errors = ValidationErrors()
        errors.add("sample.field", "Bad value")
        errors.check()

    async def crash(self) -> None:
        raise RuntimeError("unexpected")

    async def unserialisable(self) -> Any:
        return object()

    @job(abortable=True)
    def thread_job(self, job: Job, steps: int = 10) -> str:
        """
        Count C{steps} steps in a thread until aborted, reporting progress.
        """
        for i in range(steps):
            if job.aborted.wait(0.05):
                return "stopped"
            job.set_progress(100 * (i + 1) / steps, f"step {i + 1}")
        return "done"

    @job(abortable=True)
    def thread_wait_abort(self, job: Job) -> None:
        """
        Block in a thread until aborted.
        """
        job.set_progress(1, "waiting")
        job.aborted.wait()

    @job()
    def thread_nested(self, job: Job, sleep: float = 0) -> Any:
        """
        Run core.job_test from a thread with call_sync and wrap_sync.
        """
        child = self.middleware.call_sync("core.job_test", {"sleep": sleep})
        return job.wrap_sync(child)

    @job()
    def thread_nested_fail(self, job: Job) -> Any:
        child = self.middleware.call_sync("sample.failing_job", "child failed")
        try:
            child.wait_sync(raise_error=True)
        except CallError as e:
            return {"class": type(e).__name__, "errmsg": e.errmsg}

    @job()
    async def async_nested(self, job: Job, sleep: float = 0) -> Any:
        child = await self.middleware.call("core.job_test", {"sleep": sleep})
        return await job.wrap(child)

    @job()
    async def failing_job(self, job: Job, message: str) -> None:
        raise CallError(message, 22)

    @job()
    async def invalid_job(self, job: Job) -> None:
        errors = ValidationErrors()
        errors.add("invalid_job.x", "Bad x")
        errors.check()

    @job()
    async def nested_invalid(self, job: Job) -> Any:
        child = await self.middleware.call("sample.invalid_job")
        try:
            await child.wait(raise_error=True)
        except ValidationErrors as e:
            return e.extra

    @job(logs=True)
    def logging_job(self, job: Job, lines: int) -> int:
        for i in range(lines):
            job.logs_fd.write(f"line {i}\n".encode())
        return lines

    @job(lock="fixed", lock_queue_size=0)
    async def exclusive(self, job: Job, sleep: float) -> bool:
        from twisted.internet.task import deferLater

        await deferLater(self.middleware.reactor, sleep, lambda: None)
        return True

    @job(transient=True)
    async def transient_job(self, job: Job) -> str:
        return "quiet"

    @job(description=lambda name: f"Greeting {name}")
    async def described(self, job: Job, name: str) -> str:
        return f"hello {name}"

    def sleepy_thread(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds
