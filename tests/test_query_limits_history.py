"""
One connection's slow history queries queue behind each other, not in front
of other users' (issue 11, finding 11): a connection runs at most
C{[limits] history_queries} of them at once, and the store reads through
several connections, so a slow scan holds one reader, not all.

The history is filled before the daemon starts, with enough rows that a scan
which decodes each one is slow next to a query by id; it is made once for
the module, and each test gets a copy of its own.
"""

from __future__ import annotations

import datetime
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from midjobs.client import connect
from midjobs.config import Settings
from midjobs.query import validate_options
from midjobs.store import READERS, SQLiteJobStore, close_database, open_database
from midjobs.store.database import apply_part
from midjobs.store.jobs import JOBS_SCHEMA, row_of
from test_query_limits import BOB, bob  # noqa: F401 (a fixture)


#: Rows in the history of these tests: enough that a scan that decodes
#: every one is slow next to a query by id (a few milliseconds).
_ROWS = 15_000


def fill_history(database: Path, rows: int = _ROWS) -> None:
    """
    Create the jobs table in C{database} with C{rows} finished jobs of the
    admin, as a daemon would have recorded them.
    """
    finished = datetime.datetime.fromtimestamp(time.time(), datetime.timezone.utc)
    with sqlite3.connect(database) as db:
        # As the daemon's store does: the statements, and their version (a schema step may not run twice).
        db.execute("CREATE TABLE schema_version (name TEXT PRIMARY KEY, version INTEGER NOT NULL, applied REAL NOT NULL)")
        apply_part(db.cursor(), "jobs", JOBS_SCHEMA)
        db.executemany(
            "INSERT INTO jobs (id, method, state, time_started, time_finished, logs_path, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row_of({
                    "id": i, "message_ids": [], "method": "core.job_test", "arguments": [{"sleep": 0}],
                    "transient": False, "description": None, "abortable": True, "logs_path": None,
                    "logs_excerpt": None, "progress": {"percent": 100, "description": "", "extra": None},
                    "result": True, "result_encoding_error": None, "error": None, "exception": None,
                    "exc_info": None, "state": "SUCCESS",
                    "time_started": finished,
                    "time_finished": finished,
                    "credentials": {"type": "LOGIN_PASSWORD", "data": {"username": "admin", "user_id": 1}},
                })
                for i in range(1, rows + 1)
            ),
        )


def in_order(order: list[str], label: str, d: Deferred[Any]) -> Deferred[Any]:
    """
    C{d}, noting C{label} in C{order} when it fires.
    """

    def done(result: Any) -> Any:
        order.append(label)
        return result

    return d.addBoth(done)


@pytest.fixture(scope="module")
def filled_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    A database with the history of L{fill_history}, to be copied, not used.
    """
    path = tmp_path_factory.mktemp("history") / "midjobs.db"
    fill_history(path)
    return path


@pytest.fixture
def settings(settings: Settings, filled_history: Path) -> Settings:
    """
    The history is filled before the daemon starts.
    """
    state = Path(settings.state_dir)
    state.mkdir(parents=True)
    shutil.copyfile(filled_history, state / "midjobs.db")
    return settings


@pytest_twisted.ensureDeferred
async def test_one_connections_scans_wait_for_each_other(admin_client: Any, bob: Any) -> None:
    """
    bob (no roles) pipelines scans that no index answers; the admin's query
    by id, sent after them all, is answered before bob's scans are: bob's run
    two at a time ([limits] history_queries) and queue behind each other,
    not in front of the admin.
    """
    order: list[str] = []
    scan = [["arguments.0.sleep", "=", 5]]
    scans = [in_order(order, f"bob {i}", bob.call("core.get_jobs", scan)) for i in range(6)]
    # The admin's query goes out once bob's have all reached the daemon.
    assert await bob.call("core.ping") == "pong"
    mine = await in_order(order, "admin", admin_client.call("core.get_jobs", [["id", "=", 7]]))
    assert [job["id"] for job in mine] == [7]
    assert await gatherResults(scans) == [[]] * 6
    assert "bob 5" not in order[: order.index("admin")], order


@pytest_twisted.ensureDeferred
async def test_one_users_scans_wait_for_each_other_over_many_connections(
    daemon: Any, admin_client: Any, bob: Any
) -> None:
    """
    The turns are the user's, not the connection's: bob's scans from six
    connections still run two at a time, and the admin's query by id, sent
    after them all, is answered before bob's last one.
    """
    more = [await connect(daemon.ws_url, reactor=reactor) for _ in range(5)]
    try:
        for client in more:
            assert await client.login(*BOB)
        order: list[str] = []
        scan = [["arguments.0.sleep", "=", 5]]
        scans = [in_order(order, f"bob {i}", c.call("core.get_jobs", scan)) for i, c in enumerate([bob, *more])]
        for client in [bob, *more]:
            assert await client.call("core.ping") == "pong"
        mine = await in_order(order, "admin", admin_client.call("core.get_jobs", [["id", "=", 7]]))
        assert [job["id"] for job in mine] == [7]
        assert await gatherResults(scans) == [[]] * 6
        assert len([name for name in order[: order.index("admin")] if name.startswith("bob")]) <= 2, order
    finally:
        for client in more:
            await client.close()


@pytest_twisted.ensureDeferred
async def test_a_slow_scan_leaves_other_readers_free(tmp_path: Path, filled_history: Path) -> None:
    """
    The store's reader pool has several connections: two slow scans hold
    two of them, and a query by id runs beside them at once.
    """
    path = tmp_path / "midjobs.db"
    shutil.copyfile(filled_history, path)
    pool = open_database(str(path))
    store = SQLiteJobStore(pool, reactor, reader=open_database(str(path), connections=READERS))
    try:
        # As the daemon does: the writer opens the database first.  Readers
        # that are the first to open a WAL database at once may fail ("database
        # is locked": SQLite sets up its shared memory without waiting).
        await store.setup(tmp_path / "jobs")
        order: list[str] = []
        scan = [["arguments.0.sleep", "=", 5]]
        scans = [in_order(order, f"scan {i}", store.query(scan, validate_options(None), ())) for i in range(2)]
        by_id = await in_order(order, "by id", store.query([["id", "=", 7]], validate_options(None), ()))
        assert [job["id"] for job in by_id] == [7]
        assert await gatherResults(scans) == [[], []]
        assert order[0] == "by id", order
    finally:
        await store.stop()
        await close_database(pool)
