"""
Configuration backups on a cluster, over real C{twistd midjobs} nodes
(L{cluster_nodes}) on a private PostgreSQL: C{config.save} started on one
node and fetched through another holds the cluster's users (their password
hashes as stored), API keys and job records in the SQLite database of a
single daemon's backup, passes the checks of an upload, and restores on a
daemon on SQLite where the users log in; C{config.upload} on a node is
refused before it writes anything.

L{copy_catalogue} is also driven directly on a database of the private
server: an empty cluster makes a valid backup, and an abort rolls the copy
back.
"""

from __future__ import annotations

import contextlib
import errno
import io
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

from conftest import ADMIN, RunningDaemon
from midjobs.client import Client, connect
from midjobs.config import Settings, display_url
from midjobs.daemon import Daemon
from midjobs.job import JobAborted, JobState
from midjobs.plugins.config import SQLITE_SCHEMAS, SCHEMA_PARTS
from midjobs.store.backup import CONFIG_NAME, DATABASE_NAME, check_database, read_backup
from midjobs.store.pg import PgDatabase
from midjobs.store.pg_backup import BACKED_UP, copy_catalogue
from midjobs.store.restore import PENDING_DIR

from cluster_nodes import Node, NodeStarter, cluster_nodes  # noqa: F401 (fixture)
from test_config_backup import curl_upload, files_under, integrity, leftovers, members, timeout, upload

pytest_plugins = ["postgres_server"]

CONFIG = "# a node of the cluster\n[jobs]\nkeep_finished = 400\n"


@pytest_twisted.async_yield_fixture
async def two_nodes(postgres_database: str, cluster_nodes: NodeStarter) -> AsyncIterator[tuple[Node, Node, list[Client]]]:
    n1, n2 = cluster_nodes("n1", "n2", database_url=postgres_database, config=CONFIG)
    clients: list[Client] = []
    yield n1, n2, clients
    for client in clients:
        await client.close()


async def _admin(node: Node, clients: list[Client]) -> Client:
    """
    A client on the node's UNIX socket: a full administrator without a login.
    """
    client: Client = await connect(node.unix_url, reactor=reactor, call_timeout=60)
    clients.append(client)
    return client


async def _get(url: str) -> bytes:
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        response = await timeout(treq.get(url, pool=pool))
        assert response.code == 200, response.code
        body: bytes = await timeout(treq.content(response))
        return body
    finally:
        await pool.closeCachedConnections()


def _pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return list(connection.execute(sql).fetchall())


def _sqlite_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return list(connection.execute(sql).fetchall())


USERS = "SELECT id, username, full_name, password_hash, roles, locked, created FROM users ORDER BY id"
KEYS = "SELECT id, user_id, name, key_hash, created FROM api_keys ORDER BY id"
JOBS = "SELECT id, method, state, time_started, time_finished, record FROM jobs ORDER BY id"


@pytest_twisted.ensureDeferred
async def test_save_through_another_node_backs_up_the_cluster_and_restores_on_sqlite(
    two_nodes: tuple[Node, Node, list[Client]], postgres_database: str, settings: Settings, tmp_path: Path
) -> None:
    n1, n2, clients = two_nodes
    admin1, admin2 = await _admin(n1, clients), await _admin(n2, clients)
    alice = await admin1.call(
        "user.create", {"username": "alice", "password": "pw-alice", "full_name": "Alice", "roles": ["READONLY_ADMIN"]}
    )
    gone = await admin2.call("user.create", {"username": "gone", "password": "pw-gone"})
    await admin2.call("user.delete", gone["id"])
    key = (await admin2.call("api_key.create", {"name": "backup", "username": "alice"}))["key"]
    assert await admin2.call_job("core.job_test", {"description": "run on n2"}) is True

    # Started on n1, fetched through n2: relayed from n1.
    save_id, path = await admin1.call("core.download", "config.save", [], "backup.tar")
    content = await _get(n2.http_url + path)
    await timeout(admin1.call_job("core.job_wait", save_id))
    assert leftovers(n1.state_dir) == []

    files = members(content)
    assert list(files) == [CONFIG_NAME, DATABASE_NAME]
    assert files[CONFIG_NAME] == CONFIG.encode()
    db = tmp_path / "backup.db"
    db.write_bytes(files[DATABASE_NAME])
    assert integrity(db) == "ok"
    # The rows as PostgreSQL has them: the password hashes as stored, never re-hashed.
    pg_users = _pg_rows(postgres_database, USERS)
    assert [row[1] for row in pg_users] == ["alice"]
    assert _sqlite_rows(db, USERS) == pg_users
    assert _sqlite_rows(db, KEYS) == _pg_rows(postgres_database, KEYS) != []
    jobs = _sqlite_rows(db, JOBS)
    assert [(method, state) for _, method, state, *_ in jobs if method == "core.job_test"] == [("core.job_test", "SUCCESS")]
    pg_jobs = {row[0]: row for row in _pg_rows(postgres_database, JOBS)}
    assert all(pg_jobs[row[0]] == row for row in jobs if row[2] == "SUCCESS")
    # The SQLite schema of a single daemon, with the nodes' columns left behind.
    assert [name for (_, name, *_) in _sqlite_rows(db, "PRAGMA table_info(jobs)")] == [
        "id", "method", "state", "time_started", "time_finished", "logs_path", "record", "username", "job_node",
        "errno",
    ]
    assert {name for (name,) in _sqlite_rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")} == {
        "schema_version", "sqlite_sequence", "users", "api_keys", "jobs",
    }
    # A deleted user's id is never given again after a restore.
    assert _sqlite_rows(db, "SELECT seq FROM sqlite_sequence WHERE name = 'users'") == [(gone["id"],)]
    # The checks an upload makes.
    check_database(db, SCHEMA_PARTS)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    assert set(read_backup(io.BytesIO(content), unpacked)) == {CONFIG_NAME, DATABASE_NAME}

    # Restored on a daemon on SQLite, through config.upload and a restart.
    first = Daemon(settings, reactor)
    first.startService()
    await first.ready
    try:
        running = RunningDaemon(first, Path(settings.state_dir), settings.socket_path, first.listeners[0].port.getHost().port)
        await first.middleware.users.create({"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
        assert (await upload(running, content, tmp_path)).state is JobState.SUCCESS
    finally:
        await first.stopService()
    second = Daemon(settings, reactor)
    second.startService()
    await second.ready
    try:
        port = second.listeners[0].port.getHost().port
        client = await connect(f"ws://127.0.0.1:{port}/api/current", reactor=reactor)
        try:
            assert await client.login("alice", "pw-alice") is True
            assert (await client.call("auth.me"))["pw_name"] == "alice"
        finally:
            await client.close()
        client = await connect(f"ws://127.0.0.1:{port}/api/current", reactor=reactor)
        try:
            assert await client.login_with_api_key(key) is True
            listed = {j["id"]: j for j in await client.call("core.get_jobs")}
            assert {j["state"] for j in listed.values() if j["method"] == "core.job_test"} == {"SUCCESS"}
            # Running when it was copied: ended by the restart, as on one daemon.
            assert listed[save_id]["state"] == "ABORTED"
        finally:
            await client.close()
        assert [(u["id"], u["username"]) for u in await second.middleware.users.query()] == [(alice["id"], "alice")]
        fresh = await second.middleware.users.create({"username": "newcomer", "password": "pw-newcomer"})
        assert fresh["id"] > gone["id"]
    finally:
        await second.stopService()


@pytest_twisted.ensureDeferred
async def test_upload_on_a_node_is_refused_and_writes_nothing(
    two_nodes: tuple[Node, Node, list[Client]], postgres_database: str, tmp_path: Path
) -> None:
    n1, _, clients = two_nodes
    admin = await _admin(n1, clients)
    await admin.call("user.create", {"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
    # A good backup, the cluster's own: refused all the same.
    save_id, path = await admin.call("core.download", "config.save", [], "backup.tar")
    backup = tmp_path / "backup.tar"
    backup.write_bytes(await _get(n1.http_url + path))
    await timeout(admin.call_job("core.job_wait", save_id))
    before = files_under(n1.state_dir)

    status, body = await curl_upload(_AtNode(n1), backup)  # type: ignore[arg-type]  # it reads http_url only

    # The job takes its lock first (a round trip to the database on a node):
    # it may fail while the body still streams (412 with its error) or once
    # the body is in its pipe (200 with its id); either way it fails.
    assert status in (200, 412), body
    [job] = await admin.call("core.get_jobs", [["method", "=", "config.upload"]])
    await timeout(admin.call_job("core.job_wait", job["id"])).addErrback(lambda _: None)
    [job] = await admin.call("core.get_jobs", [["method", "=", "config.upload"]])
    assert job["state"] == "FAILED"
    assert job["exc_info"]["errno"] == errno.ENOTSUP
    assert f"This daemon is a node of the cluster on {display_url(postgres_database)}: " in job["error"]
    assert "Restore the database with pg_restore" in job["error"]
    if status == 412:
        assert body["error"].endswith(job["error"]), body
    else:
        assert body == {"job_id": job["id"]}, body
    password = urllib.parse.urlsplit(postgres_database).password
    assert password and password not in job["error"]
    assert not (n1.state_dir / PENDING_DIR).exists()
    assert leftovers(n1.state_dir) == []
    # Nothing in the state directory changed but the logs of the jobs.
    after = files_under(n1.state_dir)
    assert {name: digest for name, digest in after.items() if not name.startswith("jobs/")} == {
        name: digest for name, digest in before.items() if not name.startswith("jobs/")
    }


class _AtNode:
    """
    What L{curl_upload} needs of a daemon, for a node.
    """

    def __init__(self, node: Node) -> None:
        self.http_url = node.http_url


# copy_catalogue on its own.


@pytest_twisted.async_yield_fixture
async def cluster_database(postgres_database: str) -> AsyncIterator[PgDatabase]:
    """
    The private server's fresh database, migrated, as a node opens it.
    """
    db = PgDatabase(postgres_database, reactor, size=2)
    await db.open()
    try:
        await db.migrate()
        yield db
    finally:
        await db.close()


@pytest_twisted.ensureDeferred
async def test_an_empty_cluster_makes_a_backup_that_passes_the_checks(
    cluster_database: PgDatabase, tmp_path: Path
) -> None:
    reports: list[tuple[int, int]] = []
    target = tmp_path / DATABASE_NAME
    copied = await copy_catalogue(cluster_database, target, SQLITE_SCHEMAS, progress=lambda *r: reports.append(r))
    assert copied == 0
    assert reports == [(0, 0)]
    assert target.stat().st_mode & 0o777 == 0o600
    assert not Path(f"{target}-wal").exists()
    check_database(target, SCHEMA_PARTS)
    versions = dict(_sqlite_rows(target, "SELECT name, version FROM schema_version"))
    assert versions == {part.name: len(SQLITE_SCHEMAS[part.name]) for part in BACKED_UP}
    assert _sqlite_rows(target, "SELECT count(*) FROM users") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_an_abort_stops_the_copy(cluster_database: PgDatabase, tmp_path: Path) -> None:
    for i in range(1200):
        await cluster_database.runOperation(
            "INSERT INTO jobs (id, method, state, record, node) VALUES (?, 'core.job_test', 'SUCCESS', '{}', 'n1')",
            (i + 1,),
        )
    reports: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        reports.append((done, total))
        if done >= 500:
            raise JobAborted()

    target = tmp_path / DATABASE_NAME
    with pytest.raises(JobAborted):
        await copy_catalogue(cluster_database, target, SQLITE_SCHEMAS, progress=progress)
    # Read a batch at a time, and nothing of it kept.
    assert reports == [(0, 1200), (500, 1200)]
    assert _sqlite_rows(target, "SELECT count(*) FROM jobs") == [(0,)]
    # The PostgreSQL transaction was rolled back: the connection serves again.
    assert await cluster_database.runQuery("SELECT count(*) FROM jobs") == [(1200,)]
