"""
Jobs a drain test holds running until it releases them, loaded into test
daemons with C{--plugin test_drain_services}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from midjobs.job import Job
from midjobs.service import Service, job


class DrainTestService(Service):
    namespace = "drain_test"

    def __init__(self, middleware: Any) -> None:
        super().__init__(middleware)
        self._held: dict[str, Deferred[None]] = {}

    async def _hold(self, job: Job, name: str) -> str:
        held: Deferred[None] = Deferred()
        self._held[name] = held
        job.set_progress(description="held")
        try:
            await held
        finally:
            self._held.pop(name, None)
        return name

    @job(abortable=True)
    async def hold(self, job: Job, name: str) -> str:
        """
        Run until C{drain_test.release(name)}; return C{name}.
        """
        return await self._hold(job, name)

    @job(abortable=True, lock="drain")
    async def hold_locked(self, job: Job, name: str) -> str:
        """
        L{hold}, taking the lock C{drain}.
        """
        return await self._hold(job, name)

    async def release(self, name: str) -> bool:
        """
        End the held job C{name}; whether one was held.
        """
        held = self._held.get(name)
        if held is None:
            return False
        held.callback(None)
        return True
