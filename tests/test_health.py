"""
C{GET /_health}: one word for load balancers, the reasons for credentialed
callers; the store check behind it, asked at most once a second.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.web.client import HTTPConnectionPool

from conftest import RunningDaemon
from midjobs.config import Settings
from midjobs.health import CHECK_TIMEOUT, OK, StoreCheck
from midjobs.store import SQLiteJobStore, close_database, open_database

from test_metrics import basic, make_user


@pytest_twisted.async_yield_fixture
async def http_pool() -> Any:
    pool = HTTPConnectionPool(reactor, persistent=False)
    yield pool
    await pool.closeCachedConnections()


async def get(daemon: RunningDaemon, pool: Any, path: str, authorization: bytes | None = None) -> tuple[int, bytes]:
    headers = {b"Authorization": [authorization]} if authorization is not None else {}
    response = await treq.get(f"{daemon.http_url}{path}", headers=headers, pool=pool)
    return response.code, await treq.content(response)


class Checks:
    """
    A store check the test answers: each call is a pending Deferred.
    """

    def __init__(self) -> None:
        self.asked: list[Deferred[None]] = []

    def __call__(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.asked.append(d)
        return d


# The store check, in memory.


def test_one_check_a_second_whoever_asks() -> None:
    clock, checks = Clock(), Checks()
    check = StoreCheck(clock, checks)
    answers: list[str] = []
    for _ in range(100):
        check().addCallback(answers.append)
    assert len(checks.asked) == 1 and answers == []  # all wait for the one check
    checks.asked[0].callback(None)
    assert answers == [OK] * 100
    clock.advance(0.9)
    check().addCallback(answers.append)
    assert len(checks.asked) == 1 and answers[-1] == OK  # the answer of 0.9 s ago
    clock.advance(0.1)
    check().addCallback(answers.append)
    assert len(checks.asked) == 2 and len(answers) == 101


def test_a_failed_check_is_the_reason() -> None:
    clock = Clock()
    reasons = [sqlite3.OperationalError("attempt to write a readonly database"), None]
    check = StoreCheck(clock, lambda: fail(reasons[0]) if reasons[0] else succeed(None))
    assert check().result == "attempt to write a readonly database"
    reasons.pop(0)
    assert check().result == "attempt to write a readonly database"  # cached
    clock.advance(1)
    assert check().result == OK


def test_a_check_that_hangs_times_out() -> None:
    clock, checks = Clock(), Checks()
    check = StoreCheck(clock, checks)
    answer = check()
    clock.advance(CHECK_TIMEOUT)
    assert answer.result == f"no answer within {CHECK_TIMEOUT:g} s"
    assert checks.asked[0].called  # cancelled


# The SQLite store's check.


@pytest_twisted.ensureDeferred
async def test_sqlite_store_check(tmp_path: Path) -> None:
    path = str(tmp_path / "midjobs.db")
    pool = open_database(path, busy_timeout_ms=50)
    store = SQLiteJobStore(pool, reactor)
    try:
        await store.setup(tmp_path / "jobs")
        await store.check_writable()
        # Another writer holds the database: no write could go through now.
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.check_writable()
        other.execute("ROLLBACK")
        other.close()
        await store.check_writable()
        # Nothing was written.
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (0,)
    finally:
        await store.stop()
        await close_database(pool)


# GET /_health on a daemon.


@pytest_twisted.ensureDeferred
async def test_health_for_load_balancers(daemon: RunningDaemon, http_pool: Any) -> None:
    assert await get(daemon, http_pool, "/_health") == (200, b"ok\n")
    response = await treq.head(f"{daemon.http_url}/_health", pool=http_pool)
    assert response.code == 200
    # The store takes no writes: 503, with no details.
    daemon.middleware.health.store = StoreCheck(reactor, lambda: fail(sqlite3.OperationalError("disk I/O error")))
    assert await get(daemon, http_pool, "/_health") == (503, b"unavailable\n")


@pytest_twisted.ensureDeferred
async def test_full_health_needs_credentials(daemon: RunningDaemon, http_pool: Any) -> None:
    code, body = await get(daemon, http_pool, "/_health?full")
    assert code == 401 and b"disk" not in body
    await make_user(daemon, "nobody", [])
    assert (await get(daemon, http_pool, "/_health?full", basic("nobody", "nobody-pass")))[0] == 403
    await make_user(daemon, "prometheus", ["METRICS_READ"])
    code, body = await get(daemon, http_pool, "/_health?full", basic("prometheus", "prometheus-pass"))
    assert code == 200
    report = json.loads(body)
    assert report == {
        "status": "ok",
        "store": "ok",
        "drain": {"phase": "SERVING", "jobs_left": 0, "seconds_left": None},
        "listeners": [
            {"endpoint": "tcp:0:interface=127.0.0.1", "listening": True},
            {"endpoint": f"unix:{daemon.socket_path}:mode=600:lockfile=1", "listening": True},
        ],
    }
    daemon.middleware.health.store = StoreCheck(reactor, lambda: fail(sqlite3.OperationalError("disk I/O error")))
    await make_user(daemon, "boss", ["FULL_ADMIN"])
    code, body = await get(daemon, http_pool, "/_health?full", basic("boss", "boss-pass"))
    assert code == 503
    assert json.loads(body)["status"] == "unavailable" and json.loads(body)["store"] == "disk I/O error"


@pytest_twisted.ensureDeferred
async def test_the_daemons_own_store_check(daemon: RunningDaemon, http_pool: Any) -> None:
    """
    The daemon's check goes through its history's writer, and answers.
    """
    report = await daemon.middleware.health.report()
    assert report.healthy and report.store == OK


@pytest.fixture
def no_history(settings: Settings) -> Settings:
    return attrs.evolve(settings, job_history=False)


@pytest_twisted.ensureDeferred
async def test_without_history_the_state_directory_must_take_files(
    no_history: Settings, http_pool: Any
) -> None:
    from midjobs.daemon import Daemon

    service = Daemon(no_history, reactor)
    service.startService()
    await service.ready
    try:
        state = Path(no_history.state_dir)
        shutil.rmtree(state)
        report = await service.middleware.health.report()
        assert not report.healthy and "No such file or directory" in report.store
    finally:
        await service.stopService()
