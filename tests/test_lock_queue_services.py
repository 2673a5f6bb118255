"""
Services for the identity and lock-queue tests (loaded as a --plugin): a job
under one lock with a queue of one, that users with the C{RUNNER} role may
start, and that waits until a full administrator releases it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from midjobs.job import Job
from midjobs.service import Service, job, roles


class LockQueueService(Service):
    namespace = "lockq"

    def __init__(self, middleware: Any) -> None:
        super().__init__(middleware)
        self._gates: dict[str, Deferred[None]] = {}

    def _gate(self, key: str) -> Deferred[None]:
        return self._gates.setdefault(key, Deferred())

    @roles("RUNNER")
    @job(lock="queued", lock_queue_size=1, abortable=True)
    async def queued(self, job: Job, key: str) -> str:
        """
        Take the lock C{queued} (one job may wait behind the running one),
        then wait until C{lockq.release(key)}.
        """
        await self._gate(key)
        return key

    async def release(self, key: str) -> None:
        """
        Let the jobs waiting on C{key} go on (full administrators only).
        """
        gate = self._gate(key)
        if not gate.called:
            gate.callback(None)
