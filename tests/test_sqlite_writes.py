"""
How the embedded store writes: each interaction of the writer's pool is one
transaction that holds the write lock from its start; a lone statement (a
query, a batch of job records) is one that SQLite commits on its own.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, AsyncIterator

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor

from midjobs.auth import UserStore
from midjobs.store import SQLiteJobStore, close_database, open_database
from midjobs.store.database import Cursor, ensure_schema
from midjobs.store.errors import Conflict


def record(job_id: int, method: Any = "core.job_test") -> dict[str, Any]:
    return {
        "id": job_id,
        "method": method,
        "state": "SUCCESS",
        "logs_path": None,
        "time_started": None,
        "time_finished": None,
        "credentials": None,
        "exc_info": None,
        "node": "here",
    }


class Statements:
    """
    The statements a pool's connection runs, as SQLite traces them.
    """

    def __init__(self) -> None:
        self.run: list[str] = []
        self._lock = threading.Lock()

    def _traced(self, statement: str) -> None:
        with self._lock:
            self.run.append(" ".join(statement.split()).split(" (", 1)[0])

    async def trace(self, pool: Any) -> None:
        await pool.runWithConnection(lambda connection: connection.set_trace_callback(self._traced))

    def taken(self) -> list[str]:
        with self._lock:
            run, self.run = self.run, []
        return run


@attrs.frozen
class Traced:
    store: SQLiteJobStore
    statements: Statements


@pytest_twisted.async_yield_fixture
async def traced(tmp_path: Path) -> AsyncIterator[Traced]:
    """
    A job store on a new database, whose writer's statements are traced.
    """
    pool = open_database(str(tmp_path / "jobs.db"))
    store = SQLiteJobStore(pool, reactor)
    try:
        await store.setup(tmp_path / "jobs")
        statements = Statements()
        await statements.trace(pool)
        yield Traced(store, statements)
    finally:
        await store.stop()
        await close_database(pool)


@pytest_twisted.ensureDeferred
async def test_a_batch_of_records_is_one_statement(traced: Traced) -> None:
    store = traced.store
    # Three jobs' ends in one turn: one write.
    written = [store.record_finished(record(job_id)) for job_id in (1, 2, 3)]
    for d in written:
        await d
    assert traced.statements.taken() == ["INSERT INTO jobs"]
    assert [r["id"] for r in await store.query([], _all(), ())] == [1, 2, 3]


@pytest_twisted.ensureDeferred
async def test_a_batch_of_two_statements_is_one_transaction(traced: Traced) -> None:
    """
    A batch larger than one statement commits all of its rows or none:
    a row the second statement cannot write undoes the first's.
    """
    store = traced.store
    rows = [record(job_id) for job_id in range(1, 400)]
    rows[-1]["method"] = None  # NOT NULL: the second statement fails
    written = [store.record_finished(r) for r in rows]
    with pytest.raises(sqlite3.IntegrityError):
        await written[0]
    for d in written[1:]:
        d.addErrback(lambda failure: failure.trap(sqlite3.IntegrityError))
    assert traced.statements.taken() == ["BEGIN IMMEDIATE", "INSERT INTO jobs", "INSERT INTO jobs", "ROLLBACK"]
    assert await store.query([], _all(count=True), ()) == 0
    # And the next batch goes through.
    await store.record_finished(record(500))
    assert await store.query([], _all(count=True), ()) == 1


@pytest_twisted.ensureDeferred
async def test_an_interaction_holds_the_write_lock_from_its_start(tmp_path: Path) -> None:
    """
    What an interaction reads, no other writer changes before it commits:
    it begins with C{BEGIN IMMEDIATE}, and commits at its end (or rolls
    back when it raises).
    """
    path = str(tmp_path / "state.db")
    pool = open_database(path)
    try:
        await pool.runOperation("CREATE TABLE counter (n INTEGER)")
        await pool.runOperation("INSERT INTO counter VALUES (0)")
        statements = Statements()
        await statements.trace(pool)

        def read_then_write(txn: Cursor) -> None:
            txn.execute("SELECT n FROM counter")
            row = txn.fetchone()
            assert row is not None
            # Another process cannot write meanwhile: the database is locked.
            other = sqlite3.connect(path, timeout=0)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
            txn.execute("UPDATE counter SET n = ?", (row[0] + 1,))

        await pool.runInteraction(read_then_write)
        assert statements.taken() == ["BEGIN IMMEDIATE", "SELECT n FROM counter", "UPDATE counter SET n = 1", "COMMIT"]

        def fails(txn: Cursor) -> None:
            txn.execute("UPDATE counter SET n = 100")
            raise RuntimeError("no")

        with pytest.raises(RuntimeError):
            await pool.runInteraction(fails)
        assert await pool.runQuery("SELECT n FROM counter") == [(1,)]
    finally:
        await close_database(pool)


@pytest_twisted.ensureDeferred
async def test_a_lookup_does_not_wait_for_another_writer(tmp_path: Path) -> None:
    """
    A query of the writer's pool (a login's lookup of its user) is one
    statement that SQLite runs on its own: it reads beside another
    process's write transaction instead of waiting for the write lock.  A
    lone statement that writes is its own transaction, and still raises the
    store's exceptions.
    """
    path = str(tmp_path / "state.db")
    pool = open_database(path, busy_timeout_ms=50)
    users = UserStore(pool)
    other = sqlite3.connect(path, timeout=0)
    try:
        await users.setup()
        await users.create({"username": "alice", "password": "a-long-password"})
        statements = Statements()
        await statements.trace(pool)
        other.execute("BEGIN IMMEDIATE")
        found = await users.get_by_username("alice")
        assert found is not None and found["username"] == "alice"
        assert statements.taken() == ["SELECT id, username, full_name, roles, locked FROM users WHERE username = 'alice'"]
        other.rollback()

        await pool.runOperation("CREATE TABLE names (name TEXT UNIQUE)")
        await pool.runOperation("INSERT INTO names VALUES (?)", ("a",))
        with pytest.raises(Conflict):
            await pool.runOperation("INSERT INTO names VALUES (?)", ("a",))
        # No BEGIN, no COMMIT: each is a transaction of its own.
        assert statements.taken() == ["CREATE TABLE names", "INSERT INTO names VALUES", "INSERT INTO names VALUES"]
    finally:
        other.close()
        await close_database(pool)


def _all(count: bool = False) -> Any:
    from midjobs.query import QueryOptions

    return QueryOptions(count=count)


@pytest_twisted.ensureDeferred
async def test_a_schema_is_migrated_through_the_writer(tmp_path: Path) -> None:
    """
    A reader's pool would run a part's statements one by one, without the
    migration lock: it is refused.
    """
    reader = open_database(str(tmp_path / "state.db"), reads_only=True)
    try:
        with pytest.raises(ValueError, match="writer"):
            await ensure_schema(reader, "part", ["CREATE TABLE t (x)"])
    finally:
        await close_database(reader)
