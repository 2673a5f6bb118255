"""
The cheap paths of a PostgreSQL node under load, and that they keep what
the dearer ones kept: a connection checked out without a round trip is
still replaced when the server dropped it; statements run in autocommit
leave the next interaction one transaction; one statement sends a flush's
notifications in their order; a node passes over its own notifications
from their head; a record told twice in a payload is encoded once.
"""

from __future__ import annotations

import json
import time
from typing import Any, AsyncIterator

import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater

from midjobs.cluster import payloads
from midjobs.cluster.payloads import (
    JOBS_CHANNEL,
    ItemKind,
    JobItem,
    LogItem,
    pack,
    sender,
    unpack,
)
from midjobs.cluster.publisher import _notify
from midjobs.store.database import Cursor
from midjobs.store.errors import Conflict
from midjobs.store.ids import PgJobIds
from midjobs.store.jobs import encode
from midjobs.store.pg import PgDatabase

pytest_plugins = ["postgres_server"]


@pytest_twisted.async_yield_fixture
async def db(postgres_database: str) -> AsyncIterator[PgDatabase]:
    # One connection: the one the server drops is the one checked out next.
    database = PgDatabase(postgres_database, reactor, size=1)
    await database.open()
    yield database
    await database.close()


async def backend_pid(db: PgDatabase) -> int:
    rows = await db.runQuery("SELECT pg_backend_pid()")
    return int(rows[0][0])


@pytest_twisted.ensureDeferred
async def test_a_connection_the_server_dropped_is_replaced_at_checkout(db: PgDatabase, postgres_database: str) -> None:
    first = await backend_pid(db)
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (first,)).fetchone() == (True,)
        deadline = time.monotonic() + 10
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (first,)).fetchone() != (0,):
            assert time.monotonic() < deadline, "the backend did not go"
            await deferLater(reactor, 0.05, lambda: None)
    # The idle connection's socket has the server's farewell: checked, found
    # broken and replaced, the interaction does not see it.
    second = await backend_pid(db)
    assert second != first


@pytest_twisted.ensureDeferred
async def test_a_flushs_notifications_go_in_one_statement_in_order(db: PgDatabase, postgres_database: str) -> None:
    sent = [json.dumps({"n": "a", "i": i, "pad": "x" * (i * 50)}) for i in range(40)]
    with psycopg.connect(postgres_database, autocommit=True) as listener:
        listener.execute(f"LISTEN {JOBS_CHANNEL}")
        await db.runInteraction(_notify, sent)
        heard: list[str] = []
        deadline = time.monotonic() + 10
        while len(heard) < len(sent):
            assert time.monotonic() < deadline, f"heard {len(heard)} of {len(sent)}"
            heard += [notify.payload for notify in listener.notifies(timeout=0.1, stop_after=len(sent))]
    assert heard == sent


def test_the_sender_is_read_from_the_head() -> None:
    record: dict[str, Any] = {"id": 7, "state": "SUCCESS", "result": "é"}
    [payload] = pack("n-1", [JobItem(ItemKind.ADDED, 7, 1, record), LogItem(7, 10, True)])
    assert sender(payload) == "n-1" == unpack(payload).node
    # A name with escapes, or a payload that is not one: only unpack can tell.
    [escaped] = pack('n"1', [LogItem(7, 10)])
    assert sender(escaped) is None and unpack(escaped).node == 'n"1'
    assert sender("") is None and sender('{"n":"a"}') is None and sender('{"n":"a","x":[') is None


def test_a_record_told_twice_in_a_payload_is_encoded_once(monkeypatch: Any) -> None:
    encoded: list[object] = []

    def counting(record: Any) -> str:
        encoded.append(record)
        return encode(record)

    monkeypatch.setattr(payloads, "encode", counting)
    end = {"id": 7, "state": "SUCCESS", "result": "\u2603"}
    [payload] = pack("a", [JobItem(ItemKind.ADDED, 7, 1, end), JobItem(ItemKind.ENDED, 7, 2, end)])
    assert encoded == [end]
    items = unpack(payload).items
    assert [(item.kind, item.rev, item.record) for item in items if isinstance(item, JobItem)] == [
        (ItemKind.ADDED, 1, end),
        (ItemKind.ENDED, 2, end),
    ]
    # The wire JSON is ASCII: the limit, counted in characters, is one of bytes.
    assert payload.isascii()


@pytest_twisted.ensureDeferred
async def test_statements_commit_one_by_one_and_the_next_interaction_is_one_transaction(db: PgDatabase) -> None:
    await db.runOperation("CREATE TABLE t (id bigint PRIMARY KEY)")

    def two_inserts(txn: Cursor) -> None:
        txn.execute("INSERT INTO t (id) VALUES (?)", (1,))
        txn.execute("INSERT INTO t (id) VALUES (?)", (1,))

    # In autocommit the first insert stays, though the second fails.
    with pytest.raises(Conflict):
        await db.runStatements(two_inserts)
    assert await db.runQuery("SELECT id FROM t") == [(1,)]
    # The same (only) connection, checked out for a transaction: all or nothing again.
    await db.runOperation("DELETE FROM t")
    with pytest.raises(Conflict):
        await db.runInteraction(two_inserts)
    assert await db.runQuery("SELECT id FROM t") == []


@pytest_twisted.ensureDeferred
async def test_under_a_steady_load_the_block_of_ids_lasts_a_tenth_of_a_second(db: PgDatabase) -> None:
    await db.migrate()
    clock = Clock()
    ids = PgJobIds(db, clock, block=16)  # type: ignore[arg-type]  # the clock is all the time it reads
    await ids.start()

    async def take_for(seconds: float, rate: int) -> None:
        # rate ids a second, a tenth of a second at a time, never running
        # out (that alone would grow the blocks): each arrival is calm.
        for _ in range(round(seconds * 10)):
            for _ in range(rate // 10):
                while ids.at_hand <= 1 and ids._fetching is not None:
                    await deferLater(reactor, 0.001, lambda: None)
                assert ids.take() is not None
            clock.advance(0.1)

    # Within the first second nothing is known of the rate: calm blocks shrink to the least.
    await take_for(0.5, 400)
    deadline = time.monotonic() + 10
    while ids._fetching is not None:
        assert time.monotonic() < deadline
        await deferLater(reactor, 0.01, lambda: None)
    # A second and more at 400 ids a second: a block lasts a tenth of a second, 40 ids.
    await take_for(1.5, 400)
    while ids._fetching is not None:
        assert time.monotonic() < deadline
        await deferLater(reactor, 0.01, lambda: None)
    assert ids.block >= 40
    # Quiet again: a few ids a second, and the blocks shrink back to the least.
    for _ in range(20):
        clock.advance(1.5)
        # Up to the next fetch, and never to the last id: a calm arrival.
        while ids._fetching is None:
            assert ids.take() is not None
        while ids._fetching is not None:
            assert time.monotonic() < deadline
            await deferLater(reactor, 0.01, lambda: None)
        if ids.block == 16:
            break
    assert ids.block == 16
