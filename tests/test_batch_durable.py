"""
L{WriteBatch.add_durable}: durable writes told by a call, not a Deferred of
their own: in the order they were made, never from within the call, each
writer told even if another's call raises.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface.verify import verifyClass

from midjobs.store import SQLiteJobStore, StoreClosed
from midjobs.store._batch import WriteBatch
from midjobs.store._interfaces import IDurableWrites
from midjobs.store.pg_jobs import PgJobStore
from test_history import Writes


def test_writers_are_told_in_order_once_durable_with_deferred_writes_among_them() -> None:
    clock, writes = Clock(), Writes()
    batch = WriteBatch(clock, writes)
    told: list[tuple[str, Failure | None]] = []
    batch.add_durable(1, "created 1", lambda failure: told.append(("1", failure)))
    d = batch.add(2, "created 2", durable=True)
    assert d is not None
    d.addCallback(lambda _: told.append(("2", None)))
    batch.add_durable(3, "created 3", lambda failure: told.append(("3", failure)))
    assert told == []
    clock.advance(0)
    assert writes.calls == [["created 1", "created 2", "created 3"]] and told == []
    writes.pending.pop().callback(None)
    assert told == [("1", None), ("2", None), ("3", None)]


def test_a_failed_write_is_told_to_each_writer_even_if_one_raises() -> None:
    clock, writes = Clock(), Writes()
    batch = WriteBatch(clock, writes)
    told: list[Failure | None] = []

    def raises(failure: Failure | None) -> None:
        raise RuntimeError("a writer that fails to hear of it")

    batch.add_durable(1, "created 1", raises)
    batch.add_durable(2, "created 2", told.append)
    clock.advance(0)
    writes.pending.pop().errback(sqlite3.OperationalError("database or disk is full"))
    [failure] = told
    assert failure is not None and failure.check(sqlite3.OperationalError)
    # The batch goes on: the next write goes out.
    batch.add_durable(3, "created 3", told.append)
    clock.advance(0)
    assert writes.calls[-1] == ["created 3"]
    writes.pending.pop().callback(None)
    assert told[-1] is None


def test_a_closed_batch_refuses_on_the_next_turn() -> None:
    clock, writes = Clock(), Writes()
    batch = WriteBatch(clock, writes)
    batch.close()
    told: list[Failure | None] = []
    batch.add_durable(1, "late", told.append)
    assert told == []
    clock.advance(0)
    [failure] = told
    assert failure is not None and failure.check(StoreClosed)
    assert writes.calls == []


def test_the_sql_stores_tell_of_their_durable_writes_by_a_call() -> None:
    for store in (SQLiteJobStore, PgJobStore):
        assert IDurableWrites.implementedBy(store) and verifyClass(IDurableWrites, store)
