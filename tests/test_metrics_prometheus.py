"""
Debian's Prometheus server scrapes a test daemon every second with the API
key of a METRICS_READ user; the counters of the jobs run meanwhile arrive in
its query API.  Skipped only when /usr/bin/prometheus is not installed.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

from conftest import RunningDaemon
from midjobs.client import connect

PROMETHEUS = Path("/usr/bin/prometheus")

pytestmark = pytest.mark.skipif(not PROMETHEUS.exists(), reason="Debian's prometheus is not installed")

#: The most seconds Prometheus may take to start and scrape what the test awaits.
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Process(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()
        self.output = bytearray()

    def errReceived(self, data: bytes) -> None:
        self.output += data
        del self.output[:-65536]

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


@pytest_twisted.async_yield_fixture
async def prometheus(daemon: RunningDaemon, tmp_path: Path) -> Any:
    """
    A Prometheus scraping C{daemon}'s /metrics every second with the API key
    of a METRICS_READ user; yields its base URL.
    """
    middleware = daemon.middleware
    await middleware.users.create({"username": "prometheus", "password": "unused-pass-1", "roles": ["METRICS_READ"]})
    # Over the UNIX socket, the daemon's own uid is a full administrator.
    client = await connect(daemon.unix_url, reactor=reactor)
    try:
        key = (await client.call("api_key.create", {"name": "prometheus", "username": "prometheus"}))["key"]
    finally:
        await client.close()
    (tmp_path / "key").write_text(key)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "midjobs",
                        "metrics_path": "/metrics",
                        "authorization": {"type": "Bearer", "credentials_file": str(tmp_path / "key")},
                        "static_configs": [{"targets": [f"127.0.0.1:{daemon.port}"]}],
                    }
                ],
            }
        )
    )
    process = _Process()
    transport = reactor.spawnProcess(
        process,
        str(PROMETHEUS),
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        env={},
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.ended.called is False:
            transport.signalProcess("TERM")
        await process.ended


async def query(pool: Any, base: str, expr: str) -> list[Any] | None:
    """
    The result of C{expr} at Prometheus, or L{None} while it is not answering yet.
    """
    try:
        response = await treq.get(f"{base}/api/v1/query", params={"query": expr}, pool=pool)
        body = await response.json()
    except Exception:
        return None
    return body["data"]["result"] if body.get("status") == "success" else None


async def until(pool: Any, base: str, expr: str, check: Any) -> list[Any]:
    """
    Query C{expr} until C{check(result)} holds (each answer is a new query,
    never a fixed wait), or fail after L{DEADLINE} seconds.
    """
    deadline = time.monotonic() + DEADLINE
    result: list[Any] | None = None
    while time.monotonic() < deadline:
        result = await query(pool, base, expr)
        if result is not None and check(result):
            return result
        # Prometheus scrapes each second: ask again after a tenth of that.
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"{expr}: still {result!r} after {DEADLINE} s")


@pytest_twisted.ensureDeferred
async def test_prometheus_scrapes_the_counters(daemon: RunningDaemon, admin_client: Any, prometheus: str) -> None:
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        # The target is up: the API key was accepted.
        await until(pool, prometheus, 'up{job="midjobs"}', lambda r: r and r[0]["value"][1] == "1")
        for _ in range(5):
            assert await admin_client.call_job("core.job_test", {}) is True
        started = await until(
            pool,
            prometheus,
            'midjobs_jobs_started_total{method="core.job_test"}',
            lambda r: r and float(r[0]["value"][1]) >= 5,
        )
        assert float(started[0]["value"][1]) == 5
        await until(
            pool,
            prometheus,
            'midjobs_jobs_finished_total{method="core.job_test",state="SUCCESS"}',
            lambda r: r and float(r[0]["value"][1]) == 5,
        )
        await until(pool, prometheus, "process_resident_memory_bytes", lambda r: r and float(r[0]["value"][1]) > 0)
        await until(pool, prometheus, "midjobs_reactor_lag_seconds_count", lambda r: r and float(r[0]["value"][1]) > 0)
    finally:
        await pool.closeCachedConnections()
