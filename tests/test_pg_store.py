"""
The stores on PostgreSQL: L{PgDatabase} (the SQLite pool's face on psycopg's
pool, in threads of its own), the schema's migrations, and the account
stores' SQL on it.  Against the session's private server, a fresh database
per test.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from midjobs import wire_json

from midjobs.auth.api_keys import ApiKeyStore
from midjobs.auth.users import USERS_SCHEMA, UserStore
from midjobs.errors import ValidationErrors
from midjobs.store import CUT_OFF, ensure_schema
from midjobs.store.database import Cursor
from midjobs.store.errors import Conflict, MissingReference, Unavailable
from midjobs.store.pg import PgDatabase, pg_sql, safe_url
from midjobs.store.history import node_stopped
from midjobs.store.jobs import row_of
from midjobs.store.pg_jobs import PgJobStore, abort_node_jobs
from midjobs.query import QueryOptions
from midjobs.store.pg_schema import PARTS

if TYPE_CHECKING:
    from postgres_server import PostgresServer

pytest_plugins = ["postgres_server"]


@pytest_twisted.async_yield_fixture
async def db(postgres_database: str) -> AsyncIterator[PgDatabase]:
    database = PgDatabase(postgres_database, reactor, size=3)
    await database.open()
    yield database
    await database.close()


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {name for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


# PgDatabase.


def test_safe_url_has_no_password(postgres_server: PostgresServer) -> None:
    url = postgres_server.url
    shown = safe_url(url)
    assert postgres_server.password not in shown
    assert shown == f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/{postgres_server.dbname}"
    assert safe_url(postgres_server.conninfo) == shown
    with pytest.raises(ValueError) as error:
        safe_url(f"host=x password={postgres_server.password} nonsense")
    assert postgres_server.password not in str(error.value)


@pytest_twisted.ensureDeferred
async def test_placeholders_are_translated_and_percent_escaped(db: PgDatabase) -> None:
    assert db.conninfo.startswith("postgresql://") and db.safe_url == safe_url(db.conninfo)
    await db.runOperation("CREATE TABLE t (id bigint PRIMARY KEY, v text)")
    await db.runOperation("INSERT INTO t (id, v) VALUES (?, ?), (?, ?)", (1, "50%", 2, "why?"))
    rows = await db.runQuery("SELECT id, v, v LIKE '%\\%' ESCAPE '\\' FROM t WHERE id IN (?, ?) ORDER BY id", (1, 2))
    assert rows == [(1, "50%", True), (2, "why?", False)]
    # Without parameters, the text goes as it is: a % is a %.
    assert await db.runQuery("SELECT '100%'") == [("100%",)]

    def interaction(txn: Cursor, extra: int) -> tuple[int, list[Any]]:
        txn.executemany("INSERT INTO t (id, v) VALUES (?, ?)", [(10 + i, f"{i}%") for i in range(extra)])
        changed = txn.rowcount
        txn.execute("UPDATE t SET v = v || ? WHERE id >= ?", ("!", 10))
        assert txn.rowcount == extra
        txn.execute("SELECT v FROM t WHERE id >= ? ORDER BY id", (10,))
        return changed, txn.fetchall()

    changed, rows = await db.runInteraction(interaction, 3)
    assert rows == [("0%!",), ("1%!",), ("2%!",)]
    # One translation per statement text.
    hits = pg_sql.cache_info().hits
    for _ in range(3):
        await db.runQuery("SELECT count(*) FROM t WHERE id > ?", (0,))
    assert pg_sql.cache_info().hits >= hits + 2


@pytest_twisted.ensureDeferred
async def test_an_interaction_is_one_transaction(db: PgDatabase) -> None:
    await db.runOperation("CREATE TABLE t (id bigint PRIMARY KEY)")

    def insert_then_fail(txn: Cursor) -> None:
        txn.execute("INSERT INTO t (id) VALUES (?)", (1,))
        raise ZeroDivisionError("no")

    with pytest.raises(ZeroDivisionError):
        await db.runInteraction(insert_then_fail)
    assert await db.runQuery("SELECT count(*) FROM t") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_constraint_violations_are_the_stores_errors(db: PgDatabase) -> None:
    await db.runOperation("CREATE TABLE a (id bigint PRIMARY KEY, name text UNIQUE)")
    await db.runOperation("CREATE TABLE b (a_id bigint NOT NULL REFERENCES a (id))")
    await db.runOperation("INSERT INTO a (id, name) VALUES (?, ?)", (1, "x"))
    with pytest.raises(Conflict):
        await db.runOperation("INSERT INTO a (id, name) VALUES (?, ?)", (2, "x"))

    def caught(txn: Cursor) -> str:
        try:
            txn.execute("INSERT INTO a (id, name) VALUES (?, ?)", (1, "y"))
        except Conflict:
            return "conflict"
        return "inserted"

    assert await db.runInteraction(caught) == "conflict"
    with pytest.raises(MissingReference):
        await db.runOperation("INSERT INTO b (a_id) VALUES (?)", (9,))
    # Other errors are the engine's own.
    with pytest.raises(psycopg.errors.NotNullViolation):
        await db.runOperation("INSERT INTO b (a_id) VALUES (?)", (None,))
    assert await db.runQuery("SELECT id, name FROM a") == [(1, "x")]


@pytest_twisted.ensureDeferred
async def test_no_statement_runs_on_the_reactor_thread(db: PgDatabase) -> None:
    """
    Interactions run in the database's own threads: neither the reactor's
    thread nor the reactor's thread pool (where thread jobs run).
    """
    seen: list[threading.Thread] = []

    def where(txn: Cursor) -> None:
        seen.append(threading.current_thread())
        txn.execute("SELECT 1")

    await DeferredList([db.runInteraction(where) for _ in range(6)])
    assert len(seen) == 6
    assert threading.main_thread() not in seen
    reactor_pool = reactor.getThreadPool()  # type: ignore[attr-defined]
    assert all(thread not in reactor_pool.threads for thread in seen)
    assert all("midjobs-pg" in thread.name for thread in seen)


@pytest_twisted.ensureDeferred
async def test_unavailable_when_the_server_is_down(postgres_server: PostgresServer, postgres_database: str) -> None:
    """
    With the server stopped, an interaction fails with C{Unavailable} (not
    the driver's error, and without the password); once it is back, the
    pool reconnects by itself.
    """
    database = PgDatabase(postgres_database, reactor, size=2, timeout=1.0)
    await database.open()
    try:
        assert await database.runQuery("SELECT 1") == [(1,)]
        postgres_server.stop()
        try:
            with pytest.raises(Unavailable) as error:
                await database.runQuery("SELECT 1")
            assert postgres_server.password not in str(error.value)
        finally:
            postgres_server.start()
        # The first attempts may still meet the old connections' ends.
        for _ in range(10):
            try:
                assert await database.runQuery("SELECT 2") == [(2,)]
                break
            except Unavailable:
                continue
        else:
            pytest.fail("the pool did not reconnect")
    finally:
        await database.close()


@pytest_twisted.ensureDeferred
async def test_open_fails_with_unavailable(postgres_server: PostgresServer) -> None:
    wrong = postgres_server.url.replace(postgres_server.password, "wrong")
    database = PgDatabase(wrong, reactor, size=1, timeout=0.5)
    try:
        with pytest.raises(Unavailable) as error:
            await database.open()
        assert "wrong" not in str(error.value) and postgres_server.password not in str(error.value)
    finally:
        await database.close()


# Migrations.


@pytest_twisted.ensureDeferred
async def test_migrations_fresh_and_again(db: PgDatabase, postgres_database: str) -> None:
    applied = await db.migrate()
    assert applied == {name: len(statements) for name, statements in PARTS.items()}
    assert tables(postgres_database) == {
        "schema_version", "users", "api_keys", "jobs", "nodes", "cluster_secret", "node_commands",
        "job_locks", "job_lock_queue", "job_log_chunks", "tokens", "web_sessions",
    }
    assert await db.versions() == {name: (len(s), len(s)) for name, s in PARTS.items()}
    assert await db.migrate() == {name: 0 for name in PARTS}
    # ensure_schema, as the stores call it, runs the part's PostgreSQL statements.
    assert await ensure_schema(db, "users", USERS_SCHEMA) == 0


@pytest_twisted.ensureDeferred
async def test_three_nodes_migrate_at_once(db: PgDatabase, postgres_database: str) -> None:
    others = [PgDatabase(postgres_database, reactor, size=1) for _ in range(2)]
    for other in others:
        await other.open()
    try:
        results = await DeferredList([d.migrate() for d in (db, *others)], fireOnOneErrback=True, consumeErrors=True)
        counts = [result for _, result in results]
        # Each statement ran once, on one node or another.
        for name, statements in PARTS.items():
            assert sum(count[name] for count in counts) == len(statements)
        assert await db.versions() == {name: (len(s), len(s)) for name, s in PARTS.items()}
    finally:
        for other in others:
            await other.close()


@pytest_twisted.ensureDeferred
async def test_a_newer_database_is_refused(db: PgDatabase) -> None:
    await db.migrate()
    await db.runOperation("UPDATE schema_version SET version = version + 2 WHERE name = ?", ("jobs",))
    known = len(PARTS["jobs"])
    with pytest.raises(RuntimeError) as error:
        await db.ensure_schema("jobs")
    assert str(error.value) == f"schema 'jobs' is at version {known + 2}, newer than this code ({known}): upgrade midjobs"
    with pytest.raises(RuntimeError):
        await db.migrate()
    assert (await db.versions())["jobs"] == (known + 2, known)


# The account stores' SQL on PostgreSQL.


@pytest_twisted.ensureDeferred
async def test_users_and_api_keys_on_postgres(db: PgDatabase) -> None:
    users = UserStore(db)
    keys = ApiKeyStore(db)
    assert await users.setup() == len(PARTS["users"])
    assert await keys.setup() == len(PARTS["api_keys"])
    alice = await users.create({"username": "alice", "password": "pw", "roles": ["FULL_ADMIN"]})
    bob = await users.create({"username": "bob", "password": "pw"})
    assert (alice["id"], bob["id"]) == (1, 2) and alice["roles"] == ["FULL_ADMIN"] and not alice["locked"]
    with pytest.raises(ValidationErrors):
        await users.create({"username": "alice", "password": "other"})
    with pytest.raises(ValidationErrors):
        await users.update(bob["id"], {"username": "alice"})
    assert (await users.check_password("alice", "pw")) == alice
    assert await users.check_password("alice", "nope") is None

    key = await keys.create({"name": "ci", "username": "alice"})
    assert key["key"].startswith(f"{key['id']}-")
    with pytest.raises(ValidationErrors):
        await keys.create({"name": "ci", "username": "alice"})
    found = await keys.authenticate(key["key"])
    assert found == {"id": key["id"], "name": "ci", "username": "alice", "user_id": alice["id"]}
    await users.update(alice["id"], {"locked": True})
    assert await keys.authenticate(key["key"]) is None
    # A user's keys go with the user.
    await users.delete(alice["id"])
    assert await keys.query() == []
    assert [u["username"] for u in await users.query()] == ["bob"]


# PgJobStore: what a store several nodes share adds to the store-level
# tests of tests/test_history.py (which run on both engines).


def job(job_id: int, state: str = "RUNNING", **fields: Any) -> dict[str, Any]:
    """
    A job record of C{state}.
    """
    started = wire_json.from_wire({"$date": 1_700_000_000_000 + job_id})
    finished = None if state in ("WAITING", "RUNNING") else wire_json.from_wire({"$date": 1_700_000_100_000})
    return {
        "id": job_id, "message_ids": [job_id], "method": "core.job_test", "arguments": [], "transient": False,
        "description": None, "abortable": True, "logs_path": None, "logs_excerpt": None,
        "progress": {"percent": 0, "description": "", "extra": None}, "result": None,
        "result_encoding_error": None, "error": None, "exception": None, "exc_info": None, "state": state,
        "time_started": started, "time_finished": finished, "credentials": None, **fields,
    }


@pytest_twisted.async_yield_fixture
async def nodes(db: PgDatabase, tmp_path: Path) -> AsyncIterator[tuple[PgJobStore, PgJobStore]]:
    """
    The job stores of two nodes, n1 and n2, on one database.
    """
    stores = (PgJobStore(db, reactor, node="n1"), PgJobStore(db, reactor, node="n2"))
    for store in stores:
        await store.setup(tmp_path)
    yield stores
    for store in stores:
        await store.stop()


async def stored(db: PgDatabase) -> dict[int, tuple[str, str]]:
    rows = await db.runQuery("SELECT id, state, node FROM jobs ORDER BY id")
    return {job_id: (state, node) for job_id, state, node in rows}


@pytest_twisted.ensureDeferred
async def test_rows_carry_their_node_and_only_it_writes_them(
    db: PgDatabase, nodes: tuple[PgJobStore, PgJobStore]
) -> None:
    n1, n2 = nodes
    await n1.record_created(1, job(1))
    await n2.record_created(2, job(2, "WAITING"))
    assert await stored(db) == {1: ("RUNNING", "n1"), 2: ("WAITING", "n2")}
    # Another node's write of the same id changes nothing.
    await n2.record_finished(job(1, "SUCCESS"))
    assert await stored(db) == {1: ("RUNNING", "n1"), 2: ("WAITING", "n2")}
    await n1.record_finished(job(1, "SUCCESS", result=7))
    record = await n2.get(1)
    assert record is not None and (record["state"], record["result"]) == ("SUCCESS", 7)
    assert await n1.get(99) is None
    # A finished job's row is final.
    await n1.record_finished(job(1, "FAILED"))
    assert (await stored(db))[1] == ("SUCCESS", "n1")


@pytest_twisted.ensureDeferred
async def test_a_late_write_of_a_reaped_node_changes_nothing(
    db: PgDatabase, nodes: tuple[PgJobStore, PgJobStore]
) -> None:
    n1, n2 = nodes
    await n1.record_created(1, job(1))
    await n1.record_created(2, job(2, "WAITING", logs_path="/n1/jobs/2.log"))
    await n1.record_created(3, job(3, "SUCCESS"))
    await n2.record_created(4, job(4))
    error = node_stopped("n1")
    now = time.time()
    records = await db.runInteraction(abort_node_jobs, error, now, "n1")
    assert [r["id"] for r in records] == [1, 2]
    for record in records:
        assert (record["state"], record["error"], record["exc_info"]["type"]) == ("ABORTED", error, "JobAborted")
        assert abs(record["time_finished"].timestamp() - now) < 0.01
    # The log path stays the one n1 gave: its logs are n1's.
    assert records[1]["logs_path"] == "/n1/jobs/2.log"
    assert await stored(db) == {1: ("ABORTED", "n1"), 2: ("ABORTED", "n1"), 3: ("SUCCESS", "n1"),
                                4: ("RUNNING", "n2")}
    # n1, cut off meanwhile, writes its jobs' ends: the reaper's records stay.
    await n1.record_finished(job(1, "SUCCESS"))
    n1.record_changed(2, lambda: job(2, "RUNNING"))
    await n1.record_finished(job(3, "FAILED"))
    after = await n2.get(1)
    assert after is not None and (after["state"], after["error"]) == ("ABORTED", error)
    assert await stored(db) == {1: ("ABORTED", "n1"), 2: ("ABORTED", "n1"), 3: ("SUCCESS", "n1"),
                                4: ("RUNNING", "n2")}
    # Nothing of n1 is left to reap.
    assert await db.runInteraction(abort_node_jobs, error, now, "n1") == []


@pytest_twisted.ensureDeferred
async def test_abort_unfinished_is_the_nodes_own(db: PgDatabase, nodes: tuple[PgJobStore, PgJobStore]) -> None:
    n1, n2 = nodes
    for job_id, store in ((1, n1), (2, n2), (3, n1), (4, n2)):
        await store.record_created(job_id, job(job_id))
    assert await n1.abort_unfinished(CUT_OFF) == 2
    assert await stored(db) == {1: ("ABORTED", "n1"), 2: ("RUNNING", "n2"), 3: ("ABORTED", "n1"),
                                4: ("RUNNING", "n2")}
    assert await n1.abort_unfinished(CUT_OFF, node="n2") == 2
    assert {state for state, _ in (await stored(db)).values()} == {"ABORTED"}


async def copies(db: PgDatabase) -> dict[int, tuple[Any, ...]]:
    rows = await db.runQuery("SELECT id, username, job_node, errno FROM jobs ORDER BY id")
    return {job_id: tuple(copied) for job_id, *copied in rows}


@pytest_twisted.ensureDeferred
async def test_the_rows_an_older_node_wrote_get_their_copies(db: PgDatabase, tmp_path: Path) -> None:
    """
    During a rolling upgrade, a node still on older code writes rows without
    the columns the task manager filters on (C{username}, C{job_node},
    C{errno}).  A node that reaps its jobs writes them; a node that starts
    fills them in for the finished rows, so no job escapes the filters once
    the last node is upgraded.
    """
    # The first node upgraded migrated the schema.
    first = PgJobStore(db, reactor, node="first")
    await first.setup(tmp_path)
    await first.stop()
    alice = {"type": "LOGIN_PASSWORD", "data": {"username": "alice"}}
    failed = job(10, "FAILED", credentials=alice, node="old", exc_info={"type": "CallError", "errno": 5})
    running = job(11, credentials=alice, node="old")
    for record in (failed, running):
        # The older code's statement: no copied columns.
        _, method, state, started, finished, logs_path, text = row_of(record)
        await db.runOperation(
            "INSERT INTO jobs (id, method, state, time_started, time_finished, logs_path, record, node) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record["id"], method, state, started, finished, logs_path, text, "old"),
        )
    assert await copies(db) == {10: (None, None, None), 11: (None, None, None)}
    # The old node is gone: a new one reaps its unfinished job.
    (reaped,) = await db.runInteraction(abort_node_jobs, node_stopped("old"), time.time(), "old")
    assert (await copies(db))[11] == ("alice", "old", reaped["exc_info"]["errno"])
    store = PgJobStore(db, reactor, node="new")
    await store.setup(tmp_path)
    try:
        assert (await copies(db))[10] == ("alice", "old", 5)
        found = await store.query([["credentials.data.username", "=", "alice"], ["node", "=", "old"]], QueryOptions(), ())
        assert [r["id"] for r in found] == [10, 11]
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_last_id_follows_the_sequence(db: PgDatabase, nodes: tuple[PgJobStore, PgJobStore]) -> None:
    n1, _ = nodes
    assert await n1.last_id() == 0
    assert await db.runQuery("SELECT nextval('job_ids') FROM generate_series(1, 5)") == [(i,) for i in range(1, 6)]
    assert await n1.last_id() == 5
    await n1.record_created(9, job(9))
    assert await n1.last_id() == 9
    await n1.check_writable()


@pytest_twisted.ensureDeferred
async def test_a_read_only_database_is_not_writable(postgres_server: PostgresServer, postgres_database: str) -> None:
    name = postgres_database.rsplit("/", 1)[1]
    postgres_server.psql(f"ALTER DATABASE {name} SET default_transaction_read_only = on;")
    database = PgDatabase(postgres_database, reactor, size=1)
    await database.open()
    try:
        store = PgJobStore(database, reactor, node="n1")
        with pytest.raises(Unavailable, match="read-only"):
            await store.check_writable()
    finally:
        await database.close()


@pytest_twisted.ensureDeferred
async def test_a_write_waits_for_the_database_to_come_back(
    postgres_server: PostgresServer, postgres_database: str, tmp_path: Path
) -> None:
    """
    A durable write made while the server is down is tried again until it
    is back (within C{write_timeout}), then fires: nothing is dropped.
    """
    database = PgDatabase(postgres_database, reactor, size=2, timeout=0.5)
    await database.open()
    store = PgJobStore(database, reactor, node="n1", write_timeout=60)
    await store.setup(tmp_path)
    try:
        await store.record_created(1, job(1))
        postgres_server.stop()
        try:
            written = store.record_finished(job(1, "SUCCESS"))
            # Tried and failed at least once: the pool's timeout has passed.
            await deferLater(reactor, 1.5, lambda: None)
            assert not written.called
        finally:
            postgres_server.start()
        await written
        assert await stored(database) == {1: ("SUCCESS", "n1")}
    finally:
        await store.stop()
        await database.close()


@pytest_twisted.ensureDeferred
async def test_a_write_fails_after_write_timeout(postgres_server: PostgresServer, postgres_database: str) -> None:
    database = PgDatabase(postgres_database, reactor, size=1, timeout=0.2)
    await database.open()
    store = PgJobStore(database, reactor, node="n1", write_timeout=0.5)
    await store.setup()
    try:
        postgres_server.stop()
        try:
            with pytest.raises(Unavailable):
                await store.record_created(1, job(1))
        finally:
            postgres_server.start()
    finally:
        await store.stop()
        await database.close()
