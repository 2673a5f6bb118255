"""
C{core.get_jobs} events: each job's addition, changes and end, told to its
subscribers as C{collection_update}s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import implementer

from .events import EventHub
from .lifecycle import IJobObserver, JobRecord

if TYPE_CHECKING:
    from .job import Job

__all__ = ["JOBS_EVENT", "JobEvents"]

#: The event of every job's life.
JOBS_EVENT = "core.get_jobs"


@implementer(IJobObserver)
class JobEvents:
    """
    The L{IJobObserver} that tells the subscribers of L{JOBS_EVENT}: C{added}
    when a job is queued, C{changed} when it changes and when it ends.
    """

    def __init__(self, events: EventHub) -> None:
        self._events = events

    def listening(self) -> bool:
        return self._events.has_subscribers(JOBS_EVENT)

    def added(self, job: Job, record: JobRecord | None) -> None:
        self._tell("added", job, record)

    def changed(self, job: Job, record: JobRecord | None) -> None:
        self._tell("changed", job, record)

    def ended(self, job: Job, record: JobRecord) -> None:
        self.tell("changed", job.id, record)

    def tell(self, kind: str, job_id: int, record: JobRecord) -> None:
        """
        Tell the subscribers who may see it (L{midjobs.access}, by the
        owner in C{record}'s C{credentials}) that job C{job_id} was C{added}
        or C{changed} to C{record}: a job of this daemon, or one another node
        of a cluster runs (L{midjobs.cluster}).
        """
        # The hub sends nothing if nobody is subscribed.
        self._events.send(JOBS_EVENT, kind, job_id, record)

    def _tell(self, kind: str, job: Job, record: JobRecord | None) -> None:
        # The job's record is built only if someone is subscribed.
        if self._events.has_subscribers(JOBS_EVENT):
            self.tell(kind, job.id, record if record is not None else job.to_record())
