"""
A job's life, as the queue tells it to those who watch it.

A job moves through the L{JobPhase}s C{WAITING}, C{RUNNING}, C{ENDING} (its
method has stopped and its end is being recorded: nobody is told of it yet)
and C{ENDED}.  Its L{JobState} is what the wire shows: during C{ENDING} it is
still the state it ran in.

Who watches jobs registers an L{IJobObserver} with the queue
(C{JobsQueue.observe}); the job store is the queue's L{IJobRecorder}, told
first and waited for, so that nobody hears of a job's creation or end before
it is durable.  This module sits below the store and the job layer: both
import it, neither imports the other.
"""

from __future__ import annotations

import enum
import errno
from typing import Any

from zope.interface import Interface

from .errors import CallError

__all__ = [
    "IJobObserver",
    "IJobRecorder",
    "JobAborted",
    "JobCancelledException",
    "JobPhase",
    "JobRecord",
    "JobState",
]

#: A job as C{core.get_jobs} shows it (C{Job.to_record()}, C{docs/protocol.rst}, "The job record").
JobRecord = dict[str, Any]


class JobState(enum.Enum):
    """
    Where a job is in its life as the wire says it; the value is the name on the wire.
    """

    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    ABORTED = "ABORTED"

    @property
    def finished(self) -> bool:
        return self is JobState.SUCCESS or self is JobState.FAILED or self is JobState.ABORTED


class JobPhase(enum.Enum):
    """
    Where a job is in its life as the daemon drives it.

    @cvar WAITING: queued; it waits for its lock (state C{WAITING}).
    @cvar RUNNING: its method runs (state C{RUNNING}).
    @cvar ENDING: its method stopped (or it was aborted while waiting); its
        log is closed and its final record is being recorded.  Its state is
        still C{WAITING} or C{RUNNING}, nobody has been told, and it reports
        nothing more.
    @cvar ENDED: its end is recorded and told (state C{SUCCESS}, C{FAILED}
        or C{ABORTED}).
    """

    WAITING = "waiting"
    RUNNING = "running"
    ENDING = "ending"
    ENDED = "ended"


class JobAborted(CallError):
    """
    The job was aborted; C{errmsg} says why.
    """

    def __init__(self, reason: str = "Job aborted") -> None:
        super().__init__(reason, errno.ECANCELED)


#: The original daemon's name: a thread job raises it once it has stopped on
#: C{job.aborted_event}, and the job ends ABORTED.
JobCancelledException = JobAborted


class IJobObserver(Interface):
    """
    One who watches every job of a queue (the event hub, the log followers,
    the metrics, the webhooks).  Told on the reactor thread, in the order the
    observers were registered; must not block.  A transient job is never
    told of; a job the store could not record neither.

    An addition or a change comes with the job's record only if it was held
    back while the job's creation was recorded and an observer was
    L{listening} then (the record of that moment, built once for all);
    otherwise the record is C{None}, and an observer that needs it reads the
    job (C{job.to_record()}).
    """

    def listening() -> bool:
        """
        Whether the observer reads the records of additions and changes now
        (the event hub: while someone is subscribed to them).
        """

    def added(job: Any, record: JobRecord | None) -> None:
        """
        C{job} (a L{midjobs.job.Job}) was queued, and its creation is durable
        if the queue records jobs.
        """

    def changed(job: Any, record: JobRecord | None) -> None:
        """
        C{job} changed: it started, or its progress, description or message
        ids changed.
        """

    def ended(job: Any, record: JobRecord) -> None:
        """
        C{job} ended (L{JobPhase.ENDED}) and its end is durable if the queue
        records jobs.  C{record} is its final record.
        """


class IJobRecorder(Interface):
    """
    What makes jobs durable for a queue (the job store): told before any
    L{IJobObserver}, which hears of a job's creation and end only once
    L{created} and L{ending} have called back.
    """

    def created(job: Any, written: Any) -> None:
        """
        Record the new C{job}, and call C{written} later (never from within
        this call) with C{None} once its record is durable, or with the
        L{twisted.python.failure.Failure} why it cannot be (the job is then
        aborted, never told of).
        """

    def changed(job: Any) -> None:
        """
        Note that C{job} changed; written later, with other writes.
        """

    def ending(job: Any, record: JobRecord, ended: Any) -> None:
        """
        Record the final C{record} of C{job} (L{JobPhase.ENDING}), and call
        C{ended()} (no arguments) once it is durable; also if the write
        failed (the job ends all the same, and the failure is logged).
        """
