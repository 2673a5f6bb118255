"""
A queue recording into a store that tells of its durable writes by a call
(L{IDurableWrites}, as the SQL stores do): nobody hears of a job before the
write of its creation is durable, and a store that refuses the write
(closed) refuses the job on the next turn, unheard of.
"""

from __future__ import annotations

import errno
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from midjobs.errors import CallError
from midjobs.job import Job, JobsQueue, JobState
from midjobs.lifecycle import JobRecord
from midjobs.service import JobOptions
from midjobs.store._batch import WriteBatch
from midjobs.store._interfaces import IDurableWrites, Written

from test_lifecycle import Told, quick


@implementer(IDurableWrites)
class BatchStore:
    """
    The write side of a SQL store: a L{WriteBatch} whose writes the test fires.
    """

    flush_interval = 0.2

    def __init__(self, clock: Clock) -> None:
        self.writes: list[tuple[list[Any], Deferred[None]]] = []
        self.batch = WriteBatch(clock, self._write)

    def _write(self, values: list[Any]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.writes.append(([value() if callable(value) else value for value in values], d))
        return d

    def created(self, job_id: int, record: Callable[[], JobRecord], written: Written) -> None:
        self.batch.add_durable(job_id, record, written)

    def finished(self, record: JobRecord, written: Written) -> None:
        self.batch.add_durable(record["id"], record, written)

    def record_changed(self, job_id: int, record: Callable[[], JobRecord]) -> None:
        if self.batch.pending(job_id) is None:
            self.batch.add(job_id, record, durable=False)


def queue_on(clock: Clock) -> tuple[JobsQueue, BatchStore, Told]:
    store = BatchStore(clock)
    queue = JobsQueue(store=store)  # type: ignore[arg-type]  # the write side is all it uses here
    told = Told()
    queue.observe(told)
    return queue, store, told


def test_a_job_that_ends_at_once_is_told_of_once_its_one_write_is_durable() -> None:
    clock = Clock()
    queue, store, told = queue_on(clock)
    job = Job(MemoryReactorClock(), "t.quick", JobOptions(), quick(), [], is_async=True)
    caller = queue.add(job)
    clock.advance(0)
    # Its creation and its end went as one record, its last.
    [(values, write)] = store.writes
    assert [(v["id"], v["state"]) for v in values] == [(job.id, "SUCCESS")]
    assert told.events == [] and not caller.called and job.state is JobState.RUNNING
    write.callback(None)
    assert [msg for _, msg, _ in told.events] == ["added", "changed", "changed"]
    assert job.state is JobState.SUCCESS
    assert caller.result is job


def test_a_closed_store_refuses_the_job_on_the_next_turn_unheard_of() -> None:
    clock = Clock()
    queue, store, told = queue_on(clock)
    store.batch.close()
    job = Job(MemoryReactorClock(), "t.quick", JobOptions(), quick(), [], is_async=True)
    caller = queue.add(job)
    assert not caller.called
    clock.advance(0)
    refused: list[Any] = []
    caller.addErrback(refused.append)
    [failure] = refused
    assert isinstance(failure.value, CallError) and failure.value.errno == errno.EIO
    assert "closed" in failure.value.errmsg
    assert told.events == [] and store.writes == []
    assert job.id not in {listed.id for listed in queue.listed()}
