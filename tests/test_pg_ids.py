"""
Job ids (L{IJobIds}): taken in blocks from the sequence C{job_ids} that the
nodes of a cluster share (L{PgJobIds}, against the private PostgreSQL
server), or counted by one daemon over its own store (L{StoredJobIds}).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from midjobs.store import SQLiteJobStore, close_database, open_database
from midjobs.store._interfaces import IJobIds
from midjobs.store.errors import Unavailable
from midjobs.store.ids import MAX_BLOCK, CountedJobIds, PgJobIds, StoredJobIds
from midjobs.store.pg import PgDatabase

if TYPE_CHECKING:
    from postgres_server import PostgresServer

pytest_plugins = ["postgres_server"]


@pytest_twisted.async_yield_fixture
async def db(postgres_database: str) -> AsyncIterator[PgDatabase]:
    database = PgDatabase(postgres_database, reactor, size=3)
    await database.open()
    await database.migrate()
    yield database
    await database.close()


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """
    Wait (letting the reactor run) until C{condition()} holds, or fail.
    """
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the condition did not hold in time")
        await deferLater(reactor, 0.01, lambda: None)


async def take(ids: Any) -> int:
    """
    An id, waiting for one if none is at hand.
    """
    while (job_id := ids.take()) is None:
        await ids.available()
    return int(job_id)


@pytest_twisted.ensureDeferred
async def test_two_nodes_never_give_the_same_id(db: PgDatabase, postgres_database: str) -> None:
    other = PgDatabase(postgres_database, reactor, size=2)
    await other.open()
    try:
        nodes = [PgJobIds(db, reactor, block=4), PgJobIds(other, reactor)]
        for ids in nodes:
            verifyObject(IJobIds, ids)
            await ids.start()
        given: list[list[int]] = [[], []]

        async def run(i: int) -> None:
            for _ in range(300):
                given[i].append(await take(nodes[i]))

        both = [Deferred.fromCoroutine(run(i)) for i in (0, 1)]
        for d in both:
            await d
        every = given[0] + given[1]
        assert len(every) == len(set(every)) == 600
        # Each node gives its ids in order.
        assert all(ids == sorted(ids) for ids in given)
    finally:
        await other.close()


@pytest_twisted.ensureDeferred
async def test_a_block_is_refilled_at_half(db: PgDatabase) -> None:
    ids = PgJobIds(db, reactor, block=16)
    await ids.start()
    assert ids.at_hand == 16
    assert [ids.take() for _ in range(8)] == list(range(1, 9))
    # Eight left: not fewer than half, nothing fetched.
    await deferLater(reactor, 0.05, lambda: None)
    assert ids.at_hand == 8
    assert ids.take() == 9
    await until(lambda: ids.at_hand == 7 + 16)
    assert [ids.take() for _ in range(23)] == list(range(10, 33))


@pytest_twisted.ensureDeferred
async def test_running_out_waits_for_the_next_block_and_grows_it(db: PgDatabase) -> None:
    ids = PgJobIds(db, reactor, block=16)
    await ids.start()
    burst = [ids.take() for _ in range(16)]
    assert burst == list(range(1, 17))
    # The block fetched at half is not there yet: none at hand.
    assert ids.take() is None
    assert ids.take() is None
    available = ids.available()
    assert not available.called
    await available
    assert ids.block == 32
    assert ids.take() == 17
    # The next block is the larger one, and a calm one makes it smaller again.
    await until(lambda: ids.at_hand == 15 + 32)
    assert ids.block == 16


@pytest_twisted.ensureDeferred
async def test_the_block_grows_to_a_limit(db: PgDatabase) -> None:
    ids = PgJobIds(db, reactor, block=MAX_BLOCK)
    await ids.start()
    for _ in range(MAX_BLOCK):
        ids.take()
    assert ids.take() is None and ids.block == MAX_BLOCK
    await ids.available()
    with pytest.raises(ValueError):
        PgJobIds(db, reactor, block=MAX_BLOCK + 1)


@pytest_twisted.ensureDeferred
async def test_available_fails_while_the_database_is_unavailable(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    """
    When no block can be fetched, those waiting for an id hear why (the
    store's C{Unavailable}); the next call tries again.
    """
    database = PgDatabase(postgres_database, reactor, size=1, timeout=0.2)
    await database.open()
    await database.migrate()
    try:
        ids = PgJobIds(database, reactor, block=2)
        await ids.start()
        postgres_server.stop()
        try:
            # Taking the last id at hand fetches a block, which fails.
            assert [ids.take(), ids.take()] == [1, 2]
            with pytest.raises(Unavailable):
                await ids.available()
            assert ids.take() is None
        finally:
            postgres_server.start()
        for _ in range(10):
            try:
                await ids.available()
                break
            except Unavailable:
                continue
        assert (ids.take() or 0) > 2
    finally:
        await database.close()


# One daemon's ids.


@pytest_twisted.ensureDeferred
async def test_stored_ids_follow_the_store_and_keep_skipped_ones(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    pool = open_database(path)
    store = SQLiteJobStore(pool, reactor, flush_interval=0)
    await store.setup(tmp_path)
    try:
        ids = StoredJobIds(store)
        verifyObject(IJobIds, ids)
        assert ids.take() is None
        waiting = ids.available()
        await ids.start()
        assert waiting.called
        assert [ids.take(), ids.take()] == [1, 2]
        ids.skipped(2)
    finally:
        await store.stop()
        await close_database(pool)
    pool = open_database(path)
    store = SQLiteJobStore(pool, reactor)
    try:
        again = StoredJobIds(store)
        await again.start()
        assert again.take() == 3
    finally:
        await store.stop()
        await close_database(pool)


def test_counted_ids() -> None:
    ids = CountedJobIds()
    verifyObject(IJobIds, ids)
    assert ids.start().called and ids.available().called
    assert [ids.take() for _ in range(3)] == [1, 2, 3]
