"""
Where the queue's jobs get their ids and their node: an L{IJobIds} (counted
in memory by default, or given, as a store shared by several daemons gives
them in blocks), and the node name every record carries.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from midjobs.config import Settings
from midjobs.job import Job, JobsQueue, JobState
from midjobs.middleware import Middleware
from midjobs.service import JobOptions
from midjobs.store._interfaces import IJobIds
from midjobs.store.ids import CountedJobIds

from test_lifecycle import HeldStore


async def quick(job: Job) -> str:
    return "done"


def new_job(reactor: Any, **options: Any) -> Job:
    return Job(reactor, "t.quick", JobOptions(**options), quick, [], is_async=True)


@implementer(IJobIds)
class Blocks:
    """
    Ids given in blocks the test hands over, as a shared sequence would.
    """

    def __init__(self) -> None:
        self.at_hand: list[int] = []
        self.skipped_ids: list[int] = []
        self.waiting: list[Deferred[None]] = []
        self.started: Deferred[None] = Deferred()

    def start(self) -> Deferred[None]:
        return self.started

    def take(self) -> int | None:
        return self.at_hand.pop(0) if self.at_hand else None

    def available(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        return d

    def skipped(self, job_id: int) -> None:
        self.skipped_ids.append(job_id)

    def refill(self, *ids: int) -> None:
        self.at_hand.extend(ids)
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)


def test_counted_ids_count_from_the_first() -> None:
    ids = CountedJobIds(40)
    assert verifyObject(IJobIds, ids)
    assert ids.start().called and ids.available().called
    assert [ids.take(), ids.take()] == [40, 41]
    ids.skipped(41)  # without a store: nothing to keep
    assert ids.take() == 42


def test_a_job_with_an_id_at_hand_is_queued_at_once() -> None:
    reactor = MemoryReactorClock()
    queue = JobsQueue(ids=CountedJobIds(7))
    job = new_job(reactor)
    d = queue.add(job)
    # No round trip, no Deferred to wait on: the job ran and ended already.
    assert d.called and job.id == 7 and job.state is JobState.SUCCESS


def test_without_an_id_at_hand_a_job_waits_until_there_is_one() -> None:
    reactor = MemoryReactorClock()
    ids = Blocks()
    ids.at_hand = [100]
    queue = JobsQueue(ids=ids)
    first, second, third = (new_job(reactor) for _ in range(3))
    assert queue.add(first).called and first.id == 100
    answered: list[Job] = []
    for job in (second, third):
        queue.add(job).addCallback(answered.append)
    assert answered == [] and (second.id, third.id, len(queue)) == (0, 0, 1)
    ids.refill(117)
    # The first to wait got it; the other waits for the next block.
    assert second.id == 117 and second.state is JobState.SUCCESS and answered == [second]
    assert third.id == 0
    ids.refill(118, 119)
    assert third.id == 118 and answered == [second, third]
    assert [job.id for job in queue] == [100, 117, 118]


def test_an_id_refill_that_fails_fails_the_call() -> None:
    reactor = MemoryReactorClock()
    ids = Blocks()
    queue = JobsQueue(ids=ids)
    job = new_job(reactor)
    d = queue.add(job)
    failures: list[Any] = []
    d.addErrback(failures.append)
    ids.waiting.pop().errback(RuntimeError("the database is gone"))
    assert failures and failures[0].getErrorMessage() == "the database is gone"
    assert job.id == 0 and len(queue) == 0


def test_a_transient_job_skips_its_id_and_is_not_recorded() -> None:
    reactor = MemoryReactorClock()
    ids = Blocks()
    ids.at_hand = [5, 6]
    store = HeldStore()
    queue = JobsQueue(store=store, ids=ids)  # type: ignore[arg-type]  # duck-typed store
    queue.add(new_job(reactor, transient=True))
    assert ids.skipped_ids == [5] and store.created == []
    queue.add(new_job(reactor))
    assert ids.skipped_ids == [5] and [job_id for job_id, _ in store.created] == [6]


def test_every_record_names_the_node() -> None:
    reactor = MemoryReactorClock()
    job = new_job(reactor)
    JobsQueue(node="n7").add(job)
    assert job.node == "n7" and job.to_record()["node"] == "n7"
    other = new_job(reactor)
    JobsQueue().add(other)
    assert other.to_record()["node"] == socket.gethostname()


@pytest.fixture
def middleware_of(tmp_path: Any) -> Any:
    made: list[Middleware] = []

    def make(**kwargs: Any) -> Middleware:
        middleware = Middleware(MemoryReactorClock(), tmp_path, **kwargs)
        made.append(middleware)
        return middleware

    yield make
    for middleware in made:
        middleware.metrics.stop()


class NotingStore(HeldStore):
    """
    A held store that keeps the ids of transient jobs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.noted: list[int] = []

    def note_id(self, job_id: int) -> None:
        self.noted.append(job_id)

    def last_id(self) -> Deferred[int]:
        return succeed(11)


def test_the_middleware_has_ids_at_hand_before_its_services_start(middleware_of: Any) -> None:
    ids = Blocks()
    middleware = middleware_of(job_ids=ids, node="n3")
    assert middleware.jobs.ids is ids and middleware.jobs.node == "n3"
    started = Deferred.fromCoroutine(middleware.start())
    assert not started.called
    ids.started.callback(None)
    assert started.called


def test_without_ids_the_middleware_counts_on_and_keeps_transient_ids_in_its_store(middleware_of: Any) -> None:
    store = NotingStore()
    middleware = middleware_of(job_store=store)
    Deferred.fromCoroutine(middleware.start())
    transient = new_job(middleware.reactor, transient=True)
    middleware.jobs.add(transient)
    assert transient.id == 12 and store.noted == [12]
    # The node is the settings' (the host name by default), the cluster's too.
    assert middleware.cluster.node == middleware.jobs.node == Settings().node
