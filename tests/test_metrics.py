"""
/metrics: who may read it, what it counts (jobs, calls, limits, logins,
bytes), the listener of [metrics] listen, and the Grafana dashboard's queries.

End to end against a daemon in this process, over real sockets; the reactor
lag and the history's commit timer with a task.Clock.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import HTTPConnectionPool

from conftest import ADMIN, RunningDaemon
from midjobs.client import ClientCallError, JSONRPCError, connect

from midjobs.config import Settings
from midjobs.http import metrics_site
from midjobs.metrics import LIMITS, UNKNOWN_METHOD
from midjobs.metrics._lag import ReactorLag
from midjobs.store._batch import WriteBatch
from prometheus_client import CollectorRegistry

DASHBOARD = Path(__file__).parent.parent / "etc" / "grafana-dashboard.json"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(
        settings, plugins=(*settings.plugins, "upload_services", "download_services"), max_subscriptions=1
    )


@pytest_twisted.async_yield_fixture
async def http_pool() -> Any:
    pool = HTTPConnectionPool(reactor, persistent=False)
    yield pool
    await pool.closeCachedConnections()


async def make_user(daemon: RunningDaemon, name: str, roles: list[str]) -> None:
    await daemon.middleware.users.create({"username": name, "password": f"{name}-pass", "roles": roles})


async def api_key_of(daemon: RunningDaemon, admin_client: Any, name: str, roles: list[str]) -> str:
    await make_user(daemon, name, roles)
    created = await admin_client.call("api_key.create", {"name": f"{name}-key", "username": name})
    return created["key"]


def basic(name: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{name}:{password}".encode())


async def get(url: str, pool: Any, authorization: bytes | None = None) -> tuple[int, bytes, Any]:
    headers = {b"Authorization": [authorization]} if authorization is not None else {}
    response = await treq.get(url, headers=headers, pool=pool)
    return response.code, await treq.content(response), response.headers


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of a /metrics page, by name and sorted labels.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode("utf-8"))
        for sample in family.samples
    }


def value(page: dict[Any, float], name: str, **labels: str) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(daemon: RunningDaemon, pool: Any, key: str) -> dict[Any, float]:
    code, body, _ = await get(f"{daemon.http_url}/metrics", pool, b"Bearer " + key.encode())
    assert code == 200, body
    return samples(body)


@pytest_twisted.ensureDeferred
async def test_who_may_read_metrics(daemon: RunningDaemon, admin_client: Any, http_pool: Any) -> None:
    url = f"{daemon.http_url}/metrics"
    code, body, headers = await get(url, http_pool)
    assert code == 401 and b"Authentication required" in body
    assert headers.getRawHeaders(b"WWW-Authenticate") == [b'Bearer realm="midjobs"']
    code, body, _ = await get(url, http_pool, b"Bearer 1-not-a-key")
    assert code == 401

    await make_user(daemon, "plain", [])
    code, body, _ = await get(url, http_pool, basic("plain", "plain-pass"))
    assert code == 403 and b"METRICS_READ" in body
    code, body, headers = await get(url, http_pool, basic(*ADMIN))
    assert code == 200 and headers.getRawHeaders(b"Content-Type")[0].startswith(b"text/plain; version=0.0.4")
    await make_user(daemon, "reader", ["READONLY_ADMIN"])
    code, _, _ = await get(url, http_pool, basic("reader", "reader-pass"))
    assert code == 200

    key = await api_key_of(daemon, admin_client, "prometheus", ["METRICS_READ"])
    page = await scrape(daemon, http_pool, key)
    # Every limit is there from the start; the process metrics too.
    for limit in LIMITS:
        assert ("midjobs_limit_hits_total", (("limit", limit),)) in page
    assert value(page, "process_resident_memory_bytes") > 0
    assert value(page, "midjobs_logins_failed_total") == 1


@pytest_twisted.ensureDeferred
async def test_jobs_calls_and_limits_are_counted(daemon: RunningDaemon, admin_client: Any, http_pool: Any) -> None:
    key = await api_key_of(daemon, admin_client, "prometheus", ["METRICS_READ"])
    before = await scrape(daemon, http_pool, key)
    for _ in range(3):
        assert await admin_client.call_job("core.job_test", {}) is True
    with pytest.raises(ClientCallError):
        await admin_client.call_job("sample.failing_job", "no")
    for name in ("no.such_method", "x" * 200):
        with pytest.raises(JSONRPCError):
            await admin_client.call(name)
    await admin_client.call("core.subscribe", "core.get_jobs")
    with pytest.raises(ClientCallError):
        await admin_client.call("core.subscribe", "core.get_jobs")
    page = await scrape(daemon, http_pool, key)

    def grew(name: str, **labels: str) -> float:
        return value(page, name, **labels) - value(before, name, **labels)

    assert grew("midjobs_jobs_started_total", method="core.job_test") == 3
    assert grew("midjobs_jobs_finished_total", method="core.job_test", state="SUCCESS") == 3
    assert grew("midjobs_jobs_finished_total", method="sample.failing_job", state="FAILED") == 1
    assert grew("midjobs_job_duration_seconds_count", method="core.job_test") == 3
    assert grew("midjobs_rpc_calls_total", method=UNKNOWN_METHOD, outcome="error") == 2
    assert grew("midjobs_rpc_calls_total", method="core.subscribe", outcome="success") >= 1
    assert grew("midjobs_rpc_calls_total", method="core.subscribe", outcome="error") == 1
    assert grew("midjobs_limit_hits_total", limit="subscriptions") == 1
    assert not any("no.such_method" in str(labels) or "xxxx" in str(labels) for _, labels in page)
    assert value(page, "midjobs_jobs_running") == 0
    assert value(page, "midjobs_connections", transport="tcp", authenticated="true") == 1
    assert grew("midjobs_history_commit_seconds_count") >= 1
    assert value(page, "midjobs_reactor_lag_seconds_count") >= 0


@pytest_twisted.ensureDeferred
async def test_running_and_waiting_jobs(daemon: RunningDaemon, admin_client: Any, http_pool: Any) -> None:
    key = await api_key_of(daemon, admin_client, "prometheus", ["METRICS_READ"])
    anonymous = await connect(daemon.ws_url, reactor=reactor)
    try:
        # The lock's name comes from the caller: the label is the method's name.
        secret = "/home/someone/private"
        ids = [await admin_client.call("core.job_test", {"sleep": 30, "lock": secret}) for _ in range(3)]
        page = await scrape(daemon, http_pool, key)
        assert value(page, "midjobs_jobs_running") == 1
        assert value(page, "midjobs_jobs_waiting", lock="core.job_test") == 2
        assert not any(secret in str(labels) for _, labels in page)
        assert value(page, "midjobs_connections", transport="tcp", authenticated="false") == 1
        assert value(page, "midjobs_connections", transport="tcp", authenticated="true") == 1
        for job_id in ids:
            await admin_client.call("core.job_abort", job_id)
        for job_id in ids:
            await admin_client.call("core.job_wait", job_id)
        page = await scrape(daemon, http_pool, key)
        assert value(page, "midjobs_jobs_running") == 0
        assert value(page, "midjobs_jobs_waiting", lock="core.job_test") == 0
        assert value(page, "midjobs_jobs_finished_total", method="core.job_test", state="ABORTED") == 3
        assert value(page, "midjobs_jobs_started_total", method="core.job_test") == 3
    finally:
        await anonymous.close()


@pytest_twisted.ensureDeferred
async def test_upload_and_download_bytes(daemon: RunningDaemon, admin_client: Any, http_pool: Any, tmp_path: Path) -> None:
    key = await api_key_of(daemon, admin_client, "prometheus", ["METRICS_READ"])
    before = await scrape(daemon, http_pool, key)
    path = tmp_path / "up.bin"
    path.write_bytes(os.urandom(100_000))
    out, err, code = await getProcessOutputAndValue(
        "curl",
        ["-sS", "-u", ":".join(ADMIN), "-F", 'data={"method": "upload.hash", "params": []}', "-F", f"file=@{path}",
         f"{daemon.http_url}/_upload"],
        env=dict(os.environ),
    )
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    assert (await admin_client.call("core.job_wait", job_id)) is not None

    _, path_ = await admin_client.call("core.download", "dl.thread_write", [50_000], "x.bin")
    code_, body, _ = await get(daemon.http_url + path_, http_pool)
    assert code_ == 200 and len(body) == 50_000
    page = await scrape(daemon, http_pool, key)
    assert value(page, "midjobs_upload_bytes_total") - value(before, "midjobs_upload_bytes_total") == 100_000
    assert value(page, "midjobs_download_bytes_total") - value(before, "midjobs_download_bytes_total") == 50_000


@pytest_twisted.ensureDeferred
async def test_metrics_listener_without_credentials(daemon: RunningDaemon, http_pool: Any) -> None:
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(metrics_site(daemon.middleware))
    try:
        base = f"http://127.0.0.1:{port.getHost().port}"
        code, body, _ = await get(base + "/metrics", http_pool)
        assert code == 200 and b"midjobs_jobs_running" in body
        code, _, _ = await get(base + "/api/current", http_pool)
        assert code == 404
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_dashboard_queries_exist(daemon: RunningDaemon, http_pool: Any) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert any(v.get("type") == "datasource" and v.get("query") == "prometheus"
               for v in dashboard["templating"]["list"])
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    assert exprs
    await daemon.middleware.users.create({"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
    code, body, _ = await get(daemon.http_url + "/metrics", http_pool, basic(*ADMIN))
    assert code == 200
    # A family is in the page (its HELP and TYPE lines) even before it has a sample.
    names = set()
    for family in text_string_to_metric_families(body.decode()):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
        names |= {sample.name for sample in family.samples}
    used = {name for expr in exprs for name in re.findall(r"\b(?:midjobs|process)_[a-z_]+\b", expr)}
    assert used and used <= names, used - names
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_reactor_lag_is_how_late_the_timer_fires() -> None:
    clock = Clock()
    lag = ReactorLag(clock, CollectorRegistry())
    lag.start()
    clock.advance(0.1)
    clock.advance(0.35)  # due at 0.2: fired 0.25 s late
    assert lag.last._value.get() == pytest.approx(0.25)
    assert lag.histogram._sum.get() == pytest.approx(0.25)
    lag.stop()
    assert clock.getDelayedCalls() == []


def test_a_batch_times_its_commits() -> None:
    clock = Clock()
    pending: list[Any] = []

    def write(values: list[Any]) -> Any:
        from twisted.internet.defer import Deferred

        d: Deferred[None] = Deferred()
        pending.append(d)
        return d

    batch = WriteBatch(clock, write)
    times: list[float] = []
    batch.on_commit = times.append
    batch.add(1, "a", durable=True)
    clock.advance(0)
    clock.advance(0.03)
    pending.pop().callback(None)
    assert times == [pytest.approx(0.03)]
