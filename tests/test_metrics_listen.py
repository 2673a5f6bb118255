"""
C{[metrics] listen}: the daemon serves C{/metrics} there without credentials,
and nothing else.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import pytest_twisted

from conftest import RunningDaemon
from midjobs.config import Settings

from test_metrics import get, http_pool  # noqa: F401 (a fixture)

METRICS_LISTEN = "tcp:port=0:interface=127.0.0.1"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, metrics_listen=METRICS_LISTEN)


@pytest_twisted.ensureDeferred
async def test_the_metrics_listener_serves_metrics_alone(daemon: RunningDaemon, http_pool: Any) -> None:
    [listener] = [listener for listener in daemon.daemon.listeners if listener.description == METRICS_LISTEN]
    assert listener.port is not None
    base = f"http://127.0.0.1:{listener.port.getHost().port}"
    code, body, _ = await get(base + "/metrics", http_pool)
    assert code == 200 and b"midjobs_jobs_running" in body
    code, _, _ = await get(base + "/", http_pool)
    assert code == 404
    # On the daemon's own listener, /metrics still needs credentials.
    code, _, _ = await get(daemon.http_url + "/metrics", http_pool)
    assert code == 401
