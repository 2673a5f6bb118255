"""
Job locks that hold across the nodes of a cluster: L{PgLocks}, the
L{ILockManager} of a node.

Two tables of the shared database say who holds each lock and who waits
for it:

  - C{job_locks}: one row per held lock (its C{name}, the holder's
    C{job_id} and C{node}), inserted when a job takes the lock and
    committed before the job starts;
  - C{job_lock_queue}: one row per job admitted for a lock that does not
    hold it yet, its place in the lock's queue being C{seq}, a number from
    the sequence C{lock_seq}.  The row is written by the admission, before
    the job has an id (and long before the job store's group commit writes
    its record): its C{job_id} is filled in once the queue numbers the job
    (L{PgLocks.queued}); until then the job cannot be handed to another
    caller.  The row goes when the job takes the lock, or when it ends
    without having taken it (aborted while waiting, say).

Every decision about a lock is one short transaction that first takes
C{pg_advisory_xact_lock(hashtextextended(name, 0))}, so the decisions of all
nodes about one lock are serialised, and the advisory lock goes with the
commit:

  - admission counts the queue's rows and whether C{job_locks} has the lock:
    with C{lock_queue_size} 0 a held or waited-for lock refuses the job
    (C{EBUSY}); with a full queue the caller gets the newest waiting job
    (on any node) whose stored credentials the caller may share, else
    C{EBUSY}; otherwise the job's row is inserted;
  - acquisition inserts the C{job_locks} row, and deletes the job's queue
    row, only if the lock is free and no row of its queue has a smaller
    C{seq}: first come first served across the nodes;
  - release deletes the job's rows (the holder's only if it is still this
    job's) and, if there were any, notifies C{midjobs_locks}
    (L{LOCKS_CHANNEL}) with the lock's name.

A row whose job has its final record in C{jobs} no longer counts, even
before its node deletes it: a job's end is recorded before it is told, so
a caller who heard of the end finds the lock as free as on one daemon (and
so do the others once the reaper recorded a dead node's jobs as aborted).

Each node listens to C{midjobs_locks} and asks its queue to try again
(C{JobsQueue.lock_freed}); after its listener reconnects it does so for
every lock it has jobs waiting for, since a notification may have been
missed.  When a node is reaped, the reaper deletes its rows of
C{job_locks} and C{job_lock_queue} and notifies each of their locks
(L{midjobs.cluster.node}).

One node asks the database about one lock one question at a time, in the
order asked, and answers in that order: the jobs of one node are numbered,
and so queued, in the order of their places.  A release that the database
cannot take is tried again until it can, since a held lock is freed by
nothing else as long as the node lives.  While the database cannot be
reached a new locked job is refused with the store's message (C{ENOTCONN}),
and a waiting job that cannot ask for its lock is aborted with it.  A caller
handed a waiting job of another node gets its id (C{JobsQueue.remote_job}).
"""

from __future__ import annotations

import errno
import random
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import wire_json
from ..errors import CallError
from ..job import Job, JobsQueue
from ..locks import PERFORMED, PERFORMED_BY_ANOTHER, Admission, ILockManager, LockingJob, Share, Shareable
from ..logs import logger
from ..store.database import Cursor, Pool
from ..store.errors import Unavailable
from ..store.pg_listen import PgListener
from .node import LOCKS_CHANNEL

__all__ = ["LostPlace", "PgLocks"]

log = logger(__name__)

_T = TypeVar("_T")

#: The advisory lock of a job lock's name (C{?}), held until the commit.
_SERIALISE = "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))"

#: Whether the job of a row (C{job_id}) has its final record: its end is
#: told, so its row no longer counts, even before its node deletes it.
_ENDED = "EXISTS (SELECT 1 FROM jobs WHERE jobs.id = {0}.job_id AND jobs.state NOT IN ('WAITING', 'RUNNING'))"

#: Whether a job holds the lock (C{?}).
_HELD = f"EXISTS (SELECT 1 FROM job_locks WHERE job_locks.name = ? AND NOT {_ENDED.format('job_locks')})"

#: The places of a lock's queue (C{?}) that count.
_PLACES = f"job_lock_queue WHERE job_lock_queue.name = ? AND NOT {_ENDED.format('job_lock_queue')}"

#: The database's clock, in seconds since the epoch.
_NOW = "extract(epoch from clock_timestamp())::double precision"

#: Seconds before a release the database refused is tried again: the first
#: delay, and the longest.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0


class LostPlace(Exception):
    """
    A waiting job's place in its lock's queue is gone: its node was reaped
    meanwhile.
    """


def _admit(
    txn: Cursor, lock: str, queue_size: int | None, node: str, credentials: str | None
) -> tuple[int, bool] | list[tuple[int, Any]]:
    """
    Queue a job for C{lock} as its C{queue_size} allows: its place and
    whether it waits behind another job; or, the queue being full, the
    numbered waiting jobs with their credentials, newest first.

    @raise CallError: C{EBUSY}, with C{queue_size} 0, the lock is held or
        waited for.
    """
    txn.execute(_SERIALISE, (lock,))
    txn.execute(f"SELECT {_HELD}, (SELECT count(*) FROM {_PLACES})", (lock, lock))
    row = txn.fetchone()
    assert row is not None
    held, waiting = bool(row[0]), int(row[1])
    if queue_size == 0 and (held or waiting):
        raise CallError(PERFORMED, errno.EBUSY)
    if queue_size and waiting >= queue_size:
        txn.execute(
            f"SELECT job_id, credentials FROM {_PLACES} AND job_id IS NOT NULL ORDER BY seq DESC",
            (lock,),
        )
        return [(int(job_id), stored) for job_id, stored in txn.fetchall()]
    txn.execute(
        "INSERT INTO job_lock_queue (name, seq, node, credentials, since) "
        f"VALUES (?, nextval('lock_seq'), ?, ?::jsonb, {_NOW}) RETURNING seq",
        (lock, node, credentials),
    )
    place = txn.fetchone()
    assert place is not None
    return int(place[0]), held or waiting > 0


def _number(txn: Cursor, lock: str, place: int, job_id: int) -> None:
    txn.execute("UPDATE job_lock_queue SET job_id = ? WHERE name = ? AND seq = ?", (job_id, lock, place))


def _acquire(txn: Cursor, lock: str, place: int, job_id: int, node: str) -> bool:
    """
    Whether the job at C{place} took C{lock}: it is free and no job before
    it waits for it.

    @raise LostPlace: the job's place is gone.
    """
    txn.execute(_SERIALISE, (lock,))
    txn.execute(f"SELECT {_HELD}, EXISTS (SELECT 1 FROM {_PLACES} AND seq < ?)", (lock, lock, place))
    row = txn.fetchone()
    assert row is not None
    if row[0] or row[1]:
        return False
    # The row of a holder whose end is recorded, not deleted yet.
    txn.execute("DELETE FROM job_locks WHERE name = ?", (lock,))
    txn.execute("DELETE FROM job_lock_queue WHERE name = ? AND seq = ?", (lock, place))
    if txn.rowcount == 0:
        raise LostPlace(f"its place in the queue of lock {lock} is gone: the node {node} was taken for dead")
    txn.execute(f"INSERT INTO job_locks (name, job_id, node, since) VALUES (?, ?, ?, {_NOW})", (lock, job_id, node))
    return True


def _release(txn: Cursor, lock: str, place: int | None, job_id: int) -> bool:
    """
    Delete the rows of the job numbered C{job_id} (at C{place} in the queue,
    if it has one) and tell the nodes: whether it had any.
    """
    txn.execute(_SERIALISE, (lock,))
    deleted = 0
    if place is not None:
        txn.execute("DELETE FROM job_lock_queue WHERE name = ? AND seq = ?", (lock, place))
        deleted += txn.rowcount
    if job_id:
        txn.execute("DELETE FROM job_locks WHERE name = ? AND job_id = ?", (lock, job_id))
        deleted += txn.rowcount
    if deleted:
        txn.execute(f"SELECT pg_notify('{LOCKS_CHANNEL}', ?)", (lock,))
    return deleted > 0


def _shared_id(job_id: int, job: Job) -> Deferred[Any]:
    """
    What the caller of C{job} gets for the waiting job C{job_id} of another
    node that it shares: its id, as the caller of a job gets one (the job
    is waited for, listed and aborted like any other node's).
    """
    return succeed(job_id)


@implementer(ILockManager)
class PgLocks:
    """
    The locks of a node, kept with those of the other nodes in their
    shared database (see the module docstring).

    Give it the node's queue with L{attach} before the first job, and
    L{stop} it before the database closes.
    """

    def __init__(self, db: Pool, reactor: Any, *, node: str, listener: PgListener | None = None) -> None:
        """
        @param db: the shared database.
        @param reactor: provides C{IReactorTime}.
        @param node: this node's name.
        @param listener: the node's listener, which hears of the locks the
            other nodes free; without one, only this node's releases make
            its waiting jobs ask again.
        """
        self._db = db
        self._reactor = reactor
        self.node = node
        self._listener = listener
        self._jobs: JobsQueue | None = None
        #: The place of each admitted job that does not hold its lock.
        self._places: dict[LockingJob, int] = {}
        #: One question about a lock at a time, by lock.
        self._turns: dict[str, DeferredLock] = {}
        #: How many frees of a lock were heard while a job asked for it.
        self._frees_heard: dict[str, int] = {}
        #: The releases to be tried again.
        self._retries: dict[LockingJob, IDelayedCall] = {}
        self._stopped = False

    def __repr__(self) -> str:
        return f"<PgLocks of node {self.node}>"

    def attach(self, jobs: JobsQueue) -> Deferred[None]:
        """
        Make C{jobs}, the node's queue, ask again when a lock is freed, and
        hand a caller a shared waiting job of another node by its id.

        @return: fires once the node listens for freed locks.
        """
        self._jobs = jobs
        jobs.remote_job = _shared_id
        if self._listener is None:
            return succeed(None)
        self._listener.on_reconnect(self._resync)
        return self._listener.listen(LOCKS_CHANNEL, self._freed)

    def stop(self) -> Deferred[None]:
        """
        Stop listening and give up the releases still to be tried again
        (the reaper frees the node's locks once it is gone).
        """
        self._stopped = True
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()
        if self._listener is None or self._jobs is None:
            return succeed(None)
        return self._listener.unlisten(LOCKS_CHANNEL)

    # ILockManager

    def admit(self, job: LockingJob, queue_size: int | None, shareable: Shareable) -> Deferred[Admission | Share]:
        lock = job.lock_name
        assert lock is not None
        credentials = wire_json.dumps(job.credentials) if job.credentials is not None else None

        def admitted(answer: tuple[int, bool] | list[tuple[int, Any]]) -> Admission | Share:
            if isinstance(answer, tuple):
                place, behind = answer
                self._places[job] = place
                return Admission.BEHIND if behind else Admission.FREE
            for job_id, stored in answer:
                if shareable(stored):
                    return Share(job_id)
            raise CallError(PERFORMED_BY_ANOTHER, errno.EBUSY)

        return self._in_turn(
            lock, lambda: self._db.runInteraction(_admit, lock, queue_size, self.node, credentials).addCallback(admitted)
        ).addErrback(_unavailable)

    def queued(self, job: LockingJob) -> None:
        lock = job.lock_name
        place = self._places.get(job)
        if lock is None or place is None:
            return
        job_id = job.id
        numbered = self._in_turn(lock, lambda: self._db.runInteraction(_number, lock, place, job_id))
        # Until it is numbered, the job is not handed to another caller: nothing worse.
        numbered.addErrback(
            lambda failure: log.warn(
                "Job {job_id}'s place in the queue of lock {lock} not numbered: {error}",
                job_id=job_id, lock=lock, error=failure.getErrorMessage(),
            )  # fmt: skip
        )

    def acquire(self, job: LockingJob) -> Deferred[bool]:
        lock = job.lock_name
        assert lock is not None

        def ask() -> Deferred[bool]:
            place = self._places.get(job)
            if place is None:
                # Released while it waited for its turn: it ended.
                return succeed(False)
            self._frees_heard[lock] = 0
            d = self._db.runInteraction(_acquire, lock, place, job.id, self.node)

            def answered(granted: bool) -> bool | Deferred[bool]:
                heard = self._frees_heard.pop(lock, 0)
                if granted:
                    self._places.pop(job, None)
                elif heard:
                    # Freed while it asked, maybe after the question was
                    # answered: the queue would not ask again.
                    return ask()
                return granted

            def failed(failure: Failure) -> Failure:
                self._frees_heard.pop(lock, None)
                return failure

            return d.addCallbacks(answered, failed)

        return self._in_turn(lock, ask)

    def release(self, job: LockingJob) -> None:
        lock = job.lock_name
        assert lock is not None
        place = self._places.pop(job, None)
        self._release(job, lock, place, job.id, RETRY_FIRST)

    # The rest.

    def _release(self, job: LockingJob, lock: str, place: int | None, job_id: int, delay: float) -> None:
        self._retries.pop(job, None)
        d = self._in_turn(lock, lambda: self._db.runInteraction(_release, lock, place, job_id))

        def released(freed: bool) -> None:
            if freed:
                self._freed(lock)

        def failed(failure: Failure) -> None:
            if self._stopped:
                return
            log.warn(
                "Lock {lock} of job {job_id} not freed yet, trying again in {delay:.1f} s: {error}",
                lock=lock, job_id=job_id, delay=delay, error=failure.getErrorMessage(),
            )  # fmt: skip
            later = min(RETRY_MAX, delay * 2) * random.uniform(0.8, 1.2)
            self._retries[job] = self._reactor.callLater(delay, self._release, job, lock, place, job_id, later)

        d.addCallbacks(released, failed)

    def _freed(self, lock: str) -> None:
        """
        C{lock} was freed (here, or on another node that told): this node's
        jobs waiting for it ask again.
        """
        if lock in self._frees_heard:
            self._frees_heard[lock] += 1
        if self._jobs is not None:
            self._jobs.lock_freed(lock)

    def _resync(self) -> None:
        """
        The listener is back: what was freed while it was away is unknown,
        so every lock this node's jobs wait for counts as freed.
        """
        for lock in {job.lock_name for job in self._places if job.lock_name is not None}:
            self._freed(lock)

    def _in_turn(self, lock: str, work: Callable[[], Deferred[_T]]) -> Deferred[_T]:
        """
        Run C{work} once the questions about C{lock} asked before have been
        answered (their callbacks run).
        """
        turn = self._turns.get(lock)
        if turn is None:
            turn = self._turns[lock] = DeferredLock()
        answer: Deferred[_T] = Deferred()

        def run(_: object) -> None:
            try:
                d = work()
            except BaseException:
                d = Deferred()
                d.errback()
            d.addBoth(answered)

        def answered(result: _T | Failure) -> None:
            # Those who asked hear of it first, then the next question goes.
            if isinstance(result, Failure):
                answer.errback(result)
            else:
                answer.callback(result)
            turn.release()
            if not turn.locked and not turn.waiting and self._turns.get(lock) is turn:
                del self._turns[lock]

        turn.acquire().addCallback(run)
        return answer


def _unavailable(failure: Failure) -> Failure:
    """
    A database that cannot be reached refuses the job with its message.
    """
    if isinstance(failure.value, Unavailable):
        raise CallError(failure.getErrorMessage(), errno.ENOTCONN)
    return failure
