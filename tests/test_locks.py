"""
Job locks through an L{ILockManager}: L{LocalLocks} on its own (the rules of
C{lock_queue_size}, first come first served), and a queue driven by a
manager that answers later, as one in a database shared by several daemons
does: admission and acquisition answering in their own time, a lock freed
on another node, a waiting job of another node handed to a caller.
Over a real daemon in C{test_lock_queue.py} and C{test_bulk_lock.py}.
"""

from __future__ import annotations

import errno
from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from midjobs.errors import CallError
from midjobs.job import Job, JobsQueue, JobState
from midjobs.locks import Admission, ILockManager, LocalLocks, LockingJob, Share, Shareable
from midjobs.service import JobOptions

ALICE = {"type": "LOGIN_PASSWORD", "data": {"username": "alice", "user_id": 2}}
BOB = {"type": "LOGIN_PASSWORD", "data": {"username": "bob", "user_id": 3}}


@attrs.define(eq=False)
class Locking:
    """
    A job as a lock manager reads it.
    """

    id: int
    lock_name: str | None = "disk"
    credentials: dict[str, Any] | None = None
    ending: bool = False


def anyone(credentials: dict[str, Any] | None) -> bool:
    return True


def nobody(credentials: dict[str, Any] | None) -> bool:
    return False


# LocalLocks on its own.


def test_local_locks_provide_the_interface() -> None:
    assert verifyObject(ILockManager, LocalLocks())


def test_jobs_of_one_lock_hold_it_one_at_a_time_in_order() -> None:
    locks = LocalLocks()
    first, second, third = Locking(1), Locking(2), Locking(3)
    assert locks.admit(first, None, anyone) is Admission.FREE
    assert locks.admit(second, None, anyone) is Admission.BEHIND
    assert locks.admit(third, None, anyone) is Admission.BEHIND
    assert locks.acquire(first) is True
    assert locks.acquire(second) is False
    locks.release(first)
    assert locks.acquire(second) is True and locks.acquire(third) is False
    locks.release(second)
    assert locks.acquire(third) is True
    # Another lock is another queue.
    assert locks.admit(Locking(4, lock_name="net"), None, anyone) is Admission.FREE


def test_a_queue_size_of_0_refuses_while_the_lock_is_held_or_waited_for() -> None:
    locks = LocalLocks()
    holder = Locking(1)
    assert locks.admit(holder, 0, anyone) is Admission.FREE
    with pytest.raises(CallError) as error:
        locks.admit(Locking(2), 0, anyone)
    assert (error.value.errno, error.value.errmsg) == (errno.EBUSY, "This job is already being performed")
    locks.acquire(holder)
    with pytest.raises(CallError):
        locks.admit(Locking(3), 0, anyone)
    locks.release(holder)
    assert locks.admit(Locking(4), 0, anyone) is Admission.FREE


def test_a_full_queue_hands_over_its_newest_waiting_job_the_caller_may_share() -> None:
    locks = LocalLocks()
    holder, alices, bobs = Locking(1), Locking(2, credentials=ALICE), Locking(3, credentials=BOB)
    locks.admit(holder, 2, anyone)
    locks.acquire(holder)
    for job in (alices, bobs):
        locks.admit(job, 2, anyone)
    assert locks.admit(Locking(4), 2, anyone) == Share(3)
    assert locks.admit(Locking(5), 2, lambda credentials: credentials == ALICE) == Share(2)
    with pytest.raises(CallError) as error:
        locks.admit(Locking(6), 2, nobody)
    assert error.value.errmsg == "This job is already being performed by another user"
    # A job that left the queue (aborted while waiting) makes room.
    locks.release(bobs)
    assert locks.admit(Locking(7), 2, nobody) is Admission.BEHIND


def test_a_job_ending_while_it_waits_still_counts_but_no_longer_holds_anyone_back() -> None:
    locks = LocalLocks()
    aborted = Locking(1)
    locks.admit(aborted, 1, anyone)
    aborted.ending = True
    # Its end is being recorded: a new job would not wait behind it...
    newcomer = Locking(2)
    with pytest.raises(CallError):
        locks.admit(newcomer, 1, nobody)
    assert locks.admit(newcomer, None, anyone) is Admission.FREE
    # ...and once it ended, it is gone.
    locks.release(aborted)
    assert locks.acquire(newcomer) is True


def test_a_job_still_waiting_for_its_id_is_not_handed_over() -> None:
    locks = LocalLocks()
    locks.admit(Locking(0), 1, anyone)
    with pytest.raises(CallError):
        locks.admit(Locking(2), 1, anyone)


# A queue driven by a manager that answers later.


@implementer(ILockManager)
class LaterLocks:
    """
    A lock manager whose every answer is a Deferred the test fires, as a
    database's would be.
    """

    def __init__(self) -> None:
        self.admissions: list[tuple[LockingJob, int | None, Shareable, Deferred[Any]]] = []
        self.acquisitions: list[tuple[LockingJob, Deferred[bool]]] = []
        self.released: list[LockingJob] = []
        #: The ids of the admitted jobs, as they were numbered.
        self.numbered: list[int] = []

    def admit(self, job: LockingJob, queue_size: int | None, shareable: Shareable) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.admissions.append((job, queue_size, shareable, d))
        return d

    def queued(self, job: LockingJob) -> None:
        self.numbered.append(job.id)

    def acquire(self, job: LockingJob) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.acquisitions.append((job, d))
        return d

    def release(self, job: LockingJob) -> None:
        self.released.append(job)

    def admit_next(self, answer: Any) -> None:
        self.admissions.pop(0)[3].callback(answer)

    def answer_next(self, granted: bool) -> LockingJob:
        job, d = self.acquisitions.pop(0)
        d.callback(granted)
        return job


def gated_job(reactor: Any, gate: Deferred[None], lock: str = "disk", **options: Any) -> Job:
    async def run(job: Job) -> str:
        await gate
        return job.method

    return Job(reactor, f"t.{lock}", JobOptions(lock=lock, **options), run, [], is_async=True, credentials=ALICE)


def outcomes(d: Deferred[Any]) -> list[Any]:
    seen: list[Any] = []
    d.addBoth(seen.append)
    return seen


def test_a_queue_waits_for_admission_and_acquisition_and_asks_again_when_another_node_frees_the_lock() -> None:
    reactor = MemoryReactorClock()
    locks = LaterLocks()
    queue = JobsQueue(locks=locks)
    gate: Deferred[None] = Deferred()
    first, second = gated_job(reactor, gate), gated_job(reactor, gate)
    first_added, second_added = outcomes(queue.add(first)), outcomes(queue.add(second))
    assert len(locks.admissions) == 2 and first.id == second.id == 0
    # Admitted: numbered and queued; the first asks for the lock.
    locks.admit_next(Admission.FREE)
    assert first.id == 1 and first_added == [first] and locks.numbered == [1]
    assert [job for job, _ in locks.acquisitions] == [first]
    locks.admit_next(Admission.BEHIND)
    assert second.id == 2 and second.progress["description"] == "Waiting for lock disk"
    assert locks.numbered == [1, 2]
    # One question a lock at a time: the second waits for the first's answer.
    assert [job for job, _ in locks.acquisitions] == [first]
    assert first.state is JobState.WAITING and first.waiting_for is None

    locks.answer_next(True)
    assert first.state is JobState.RUNNING
    gate.callback(None)
    # The first ended (its lock released); the second asks, but the lock is
    # now held on another node.
    assert first.state is JobState.SUCCESS and locks.released == [first]
    assert [job for job, _ in locks.acquisitions] == [second]
    locks.answer_next(False)
    assert second.state is JobState.WAITING and second.waiting_for == "disk"
    assert locks.acquisitions == []
    # A lock of no one here waiting changes nothing.
    queue.lock_freed("net")
    assert locks.acquisitions == []
    # That node freed it: ask again.
    queue.lock_freed("disk")
    assert locks.answer_next(True) is second
    assert second.state is JobState.SUCCESS and second_added == [second]
    assert locks.released == [first, second]


def test_an_admission_that_answers_ebusy_later_fails_the_call_and_takes_no_id() -> None:
    reactor = MemoryReactorClock()
    locks = LaterLocks()
    queue = JobsQueue(locks=locks)
    refused = outcomes(queue.add(gated_job(reactor, Deferred())))
    locks.admissions.pop()[3].errback(CallError("This job is already being performed", errno.EBUSY))
    assert refused[0].value.errno == errno.EBUSY
    later = gated_job(reactor, succeed(None))
    queue.add(later)
    locks.admit_next(Admission.FREE)
    assert later.id == 1


def test_a_caller_handed_a_waiting_job_of_this_node_gets_it_once_recorded() -> None:
    reactor = MemoryReactorClock()
    locks = LaterLocks()
    queue = JobsQueue(locks=locks)
    waiting = gated_job(reactor, Deferred())
    queue.add(waiting)
    locks.admit_next(Admission.FREE)
    new = gated_job(reactor, Deferred())
    answer = outcomes(queue.add(new))
    _, size, shareable, d = locks.admissions[0]
    assert size == 5 and shareable(ALICE) and not shareable(BOB)
    d.callback(Share(waiting.id))
    assert answer == [waiting] and new.id == 0 and locks.numbered == [waiting.id]


def test_a_waiting_job_of_another_node_comes_through_the_remote_hook() -> None:
    reactor = MemoryReactorClock()
    locks = LaterLocks()
    queue = JobsQueue(locks=locks)
    alone = outcomes(queue.add(gated_job(reactor, Deferred())))
    locks.admit_next(Share(4711))
    # A daemon alone knows of no other node's jobs.
    assert alone[0].value.errno == errno.ENOENT

    asked: list[tuple[int, Job]] = []

    def remote_job(job_id: int, job: Job) -> Deferred[Any]:
        asked.append((job_id, job))
        return succeed({"id": job_id, "node": "n2"})

    queue.remote_job = remote_job
    new = gated_job(reactor, Deferred())
    answer = outcomes(queue.add(new))
    locks.admit_next(Share(4711))
    assert asked == [(4711, new)] and answer == [{"id": 4711, "node": "n2"}]
    assert new.id == 0 and len(queue) == 0


def test_a_job_aborted_while_it_asks_for_its_lock_does_not_keep_it() -> None:
    reactor = MemoryReactorClock()
    locks = LaterLocks()
    queue = JobsQueue(locks=locks)
    job = gated_job(reactor, Deferred())
    queue.add(job)
    locks.admit_next(Admission.FREE)
    job.abort("stop")
    assert job.state is JobState.ABORTED and locks.released == [job]
    # The answer comes after its end: granted, it is given back at once.
    locks.answer_next(True)
    assert locks.released == [job, job] and job.state is JobState.ABORTED


def test_a_lock_that_cannot_be_asked_for_aborts_its_job_and_the_next_one_asks() -> None:
    reactor = MemoryReactorClock()
    locks = LaterLocks()
    queue = JobsQueue(locks=locks)
    first, second = gated_job(reactor, Deferred()), gated_job(reactor, succeed(None))
    queue.add(first)
    queue.add(second)
    locks.admit_next(Admission.FREE)
    locks.admit_next(Admission.BEHIND)
    locks.acquisitions.pop(0)[1].errback(ConnectionError("the database is gone"))
    assert first.state is JobState.ABORTED
    assert first.error == "The lock disk could not be taken: the database is gone"
    assert locks.answer_next(True) is second and second.state is JobState.SUCCESS
