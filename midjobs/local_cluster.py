"""
A daemon alone: the L{ICluster} of one node, whose jobs are all in its own
memory or, once forgotten there, in its own job store.
"""

from __future__ import annotations

import datetime
import errno
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from .errors import CallError
from .interfaces import NODE_ONLINE, ICluster
from .lifecycle import JobState

if TYPE_CHECKING:
    from .job import JobsQueue
    from .lifecycle import JobRecord
    from .store import IJobStore

__all__ = ["LocalCluster"]


@implementer(ICluster)
class LocalCluster:
    """
    One node: L{nodes} lists it alone, L{record} reads the job store, and no
    job runs anywhere else, so L{abort} and L{wait} answer C{ENOENT}.

    @ivar node: this daemon's node name.
    """

    def __init__(
        self,
        node: str,
        store: IJobStore | None,
        jobs: JobsQueue | None = None,
        advertise: str | None = None,
    ) -> None:
        """
        @param store: the job store, or C{None} (no history).
        @param jobs: the daemon's jobs, whose running ones L{nodes} counts.
        @param advertise: the URL at which other nodes would reach this one
            (L{midjobs.config.Settings.advertise_url}).
        """
        self.node = node
        self._store = store
        self._jobs = jobs
        self._advertise = advertise

    def nodes(self) -> Deferred[list[dict[str, Any]]]:
        running = sum(1 for job in self._jobs.listed() if job.state is JobState.RUNNING) if self._jobs is not None else 0
        return succeed(
            [
                {
                    "name": self.node,
                    "advertise": self._advertise,
                    "state": NODE_ONLINE,
                    "heartbeat": datetime.datetime.now(datetime.timezone.utc),
                    "running_jobs": running,
                }
            ]
        )

    def record(self, job_id: int) -> Deferred[JobRecord | None]:
        if self._store is None:
            return succeed(None)
        found: Deferred[JobRecord | None] = self._store.get(job_id)
        return found

    def abort(self, record: JobRecord, reason: str) -> Deferred[None]:
        return fail(_no_such_job(record["id"]))

    def check_accepting(self) -> None:
        """
        A daemon alone always may: its store is its own.
        """

    def wait(self, job_id: int) -> Deferred[JobRecord]:
        return fail(_no_such_job(job_id))


def _no_such_job(job_id: int) -> CallError:
    """
    What asking for a job no node runs raises (the message of C{JobsQueue.get}).
    """
    return CallError(f"Job {job_id} does not exist", errno.ENOENT)
