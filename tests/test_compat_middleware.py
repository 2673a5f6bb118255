"""
The original's calling conventions inside the daemon (docs/compatibility.rst):
C{middleware.call(..., job_on_progress_cb=...)}, C{call_sync(...,
background=True)} and C{job.middleware}, over a real daemon.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import pytest_twisted

from midjobs.client import Client

from test_jobs import subscribed

COMPAT_SERVICES = "compat_services"


@pytest.fixture
def settings(settings: Any) -> Any:
    return attrs.evolve(settings, plugins=(*settings.plugins, COMPAT_SERVICES))


@pytest_twisted.ensureDeferred
async def test_job_on_progress_cb_hears_the_called_jobs_progress(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    job_id = await admin_client.call("compat.relay")
    done = await events.state(job_id, "SUCCESS")
    assert done["result"] == "stepped"
    relayed = [f["progress"] for msg, id, f in events.events if id == job_id]
    assert {"percent": 25, "description": "inner: half way", "extra": None} in relayed


@pytest_twisted.ensureDeferred
async def test_call_sync_in_the_background_returns_at_once(admin_client: Client, daemon: Any) -> None:
    assert await admin_client.call_job("compat.in_background", "noted") is None
    assert await daemon.middleware.services["compat"].noted == "noted"


@pytest_twisted.ensureDeferred
async def test_a_background_call_that_fails_is_logged(admin_client: Client, log_events: Any) -> None:
    assert await admin_client.call_job("compat.in_background", "noted") is None
    job_id = await admin_client.call("compat.in_background", "twice")
    await admin_client.call_job("core.job_wait", job_id)
    # The second note fails (its Deferred has fired): logged, nothing else.
    # The thread asks for the call before it returns, and the reactor runs
    # what threads ask in order: it was logged before the job ended.
    failures = [e for e in log_events if e.get("log_format") == "Background call of {method} failed"]
    assert failures and failures[0]["method"] == "compat.note"


@pytest_twisted.ensureDeferred
async def test_a_job_knows_its_middleware(admin_client: Client) -> None:
    assert await admin_client.call_job("compat.knows_its_middleware") is True
