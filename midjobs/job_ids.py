"""
Job ids counted in memory: those of a daemon that keeps no history, or that
counts on from the highest id its own store has seen.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from .store._interfaces import IJobIds

__all__ = ["CountingJobIds"]


@implementer(IJobIds)
class CountingJobIds:
    """
    Ids C{first}, C{first + 1}, ...: always one at hand.
    """

    def __init__(self, first: int = 1, keep: Callable[[int], None] | None = None) -> None:
        """
        @param first: the first id given.
        @param keep: called with the id of each job that is not stored (a
            transient one), so that the store keeps it from being given
            again after a restart (L{midjobs.store.IJobStore.note_id}).
        """
        self._next = first
        self._keep = keep

    def start(self) -> Deferred[None]:
        return succeed(None)

    def take(self) -> int:
        job_id = self._next
        self._next = job_id + 1
        return job_id

    def available(self) -> Deferred[None]:
        return succeed(None)

    def skipped(self, job_id: int) -> None:
        if self._keep is not None:
            self._keep(job_id)
