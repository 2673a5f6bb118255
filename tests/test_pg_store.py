"""
The stores on PostgreSQL: L{PgDatabase} (the SQLite pool's face on psycopg's
pool, in threads of its own), the schema's migrations, and the account
stores' SQL on it.  Against the session's private server, a fresh database
per test.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, AsyncIterator

import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList

from midjobs.auth.api_keys import ApiKeyStore
from midjobs.auth.users import USERS_SCHEMA, UserStore
from midjobs.errors import ValidationErrors
from midjobs.store import ensure_schema
from midjobs.store.database import Cursor
from midjobs.store.errors import Conflict, MissingReference, Unavailable
from midjobs.store.pg import PgDatabase, pg_sql, safe_url
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
        "job_locks", "job_log_chunks", "tokens",
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
    assert str(error.value) == f"schema 'jobs' is at version {known + 2}, newer than this code ({known})"
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
