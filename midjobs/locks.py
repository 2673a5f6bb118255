"""
Job locks: which job holds each lock, and who may queue behind it.

A job method's C{@job(lock=...)} names a lock; jobs with the same lock run
one at a time, first come first served, and C{lock_queue_size} bounds how
many may wait.  The C{JobsQueue} asks an L{ILockManager}
(L{ILockManager.admit}) before it numbers a new job, so that a refused call
takes no id; tells it the job's id once numbered (L{ILockManager.queued});
asks it again when a waiting job is at the head of its lock's queue
(L{ILockManager.acquire}), and tells it once the job's end is recorded
(L{ILockManager.release}).

L{LocalLocks} keeps that in memory, for one daemon: every answer comes at
once.  A manager several daemons share keeps it in their database, so its
answers may come later, as Deferreds: admission counts the waiting jobs of
the lock on every node, in one transaction that also records this one as
waiting (a row without a job id yet, whose id L{ILockManager.queued} fills
in: a job still without one is not handed to another caller); acquisition
inserts the holder's row; release deletes that row right after the
job's final record is written (a holder whose job's end is recorded no
longer counts, so nobody who heard of the end finds the lock held).  When a job on another node
frees a lock, the manager's owner calls C{JobsQueue.lock_freed(lock)}, and
the queue asks again for the jobs waiting for it.
"""

from __future__ import annotations

import enum
import errno
from typing import Any, Callable, Protocol

import attrs
from zope.interface import Interface, implementer

from .errors import CallError

__all__ = ["Admission", "ILockManager", "LocalLocks", "LockingJob", "Share", "Shareable"]

#: The EBUSY message for a lock held, or waited for, with C{lock_queue_size} 0.
PERFORMED = "This job is already being performed"

#: The EBUSY message for a full queue of jobs the caller may not share.
PERFORMED_BY_ANOTHER = "This job is already being performed by another user"


class LockingJob(Protocol):
    """
    What a lock manager reads of a job (a L{midjobs.job.Job}).
    """

    @property
    def id(self) -> int: ...

    @property
    def lock_name(self) -> str | None: ...

    @property
    def credentials(self) -> dict[str, Any] | None: ...

    @property
    def ending(self) -> bool: ...


#: Whether the caller of a new job may be handed, instead, the waiting job
#: started with these credentials (its record's C{credentials}).
Shareable = Callable[[dict[str, Any] | None], bool]


class Admission(enum.Enum):
    """
    A new job may be queued.

    @cvar FREE: nothing holds or waits for its lock: it may start at once.
    @cvar BEHIND: its lock is held, or other jobs wait for it: it waits its
        turn, and its first record says so.
    """

    FREE = "free"
    BEHIND = "behind"


@attrs.frozen
class Share:
    """
    A new job is not queued: its lock's queue is full, and its caller gets
    the waiting job C{job_id} instead (on another node, maybe).
    """

    job_id: int


class ILockManager(Interface):
    """
    Who holds each job lock, and the queue of each.  Called on the reactor
    thread.  Each method may answer with its value or with a Deferred of it;
    the queue takes either.
    """

    def admit(job: LockingJob, queue_size: int | None, shareable: Shareable) -> Any:
        """
        Whether C{job}, which has a C{lock_name} and no id yet, may be queued:
        an L{Admission}, or a L{Share} when its lock's C{queue_size} jobs wait
        (the newest waiting job whose credentials C{shareable} accepts).
        From an L{Admission} on, C{job} counts among its lock's waiting jobs
        until it L{acquire}s the lock or is L{release}d.

        @param queue_size: the method's C{lock_queue_size}: C{None} for no
            bound, C{0} for none waiting.
        @raise CallError: C{EBUSY}, the lock is held or waited for and
            C{queue_size} is 0, or its queue is full of jobs C{shareable}
            refuses.  Raised at once, or as the Deferred's failure.
        """

    def queued(job: LockingJob) -> None:
        """
        C{job}, admitted, now has its C{id} and is queued.
        """

    def acquire(job: LockingJob) -> Any:
        """
        Whether the waiting C{job}, first of its lock's queue on this node,
        now holds its lock (a bool).  The queue asks one job of a lock at a
        time, and asks again after a job of that lock ends here or after
        C{JobsQueue.lock_freed}.
        """

    def release(job: LockingJob) -> None:
        """
        C{job} ended and its end is recorded: it holds its lock no more, or
        waits for it no more.
        """


@implementer(ILockManager)
class LocalLocks:
    """
    The locks of one daemon, in memory: each answer at once.
    """

    def __init__(self) -> None:
        self._holders: dict[str, LockingJob] = {}
        #: The jobs admitted for each lock that do not hold it yet, in order.
        self._waiting: dict[str, list[LockingJob]] = {}

    def admit(self, job: LockingJob, queue_size: int | None, shareable: Shareable) -> Admission | Share:
        lock = job.lock_name
        assert lock is not None
        waiting = self._waiting.get(lock, [])
        if queue_size == 0 and (lock in self._holders or waiting):
            raise CallError(PERFORMED, errno.EBUSY)
        if queue_size and len(waiting) >= queue_size:
            for queued in reversed(waiting):
                # A job still waiting for its id cannot be handed over yet.
                if queued.id and shareable(queued.credentials):
                    return Share(queued.id)
            raise CallError(PERFORMED_BY_ANOTHER, errno.EBUSY)
        behind = lock in self._holders or any(not queued.ending for queued in waiting)
        self._waiting.setdefault(lock, []).append(job)
        return Admission.BEHIND if behind else Admission.FREE

    def queued(self, job: LockingJob) -> None:
        # The job itself is kept since its admission: its id is read from it.
        pass

    def acquire(self, job: LockingJob) -> bool:
        lock = job.lock_name
        assert lock is not None
        if lock in self._holders:
            return False
        self._holders[lock] = job
        self._unqueue(lock, job)
        return True

    def release(self, job: LockingJob) -> None:
        lock = job.lock_name
        assert lock is not None
        if self._holders.get(lock) is job:
            del self._holders[lock]
        else:
            self._unqueue(lock, job)

    def _unqueue(self, lock: str, job: LockingJob) -> None:
        waiting = self._waiting.get(lock)
        if waiting is not None and job in waiting:
            waiting.remove(job)
            if not waiting:
                del self._waiting[lock]
