"""
Job time limits over a real daemon and WebSocket: a job past its
C{@job(timeout=...)} or the C{[jobs] default_timeout} ends ABORTED with
"Job exceeded its time limit of N s", whether it is async (cancelled) or a
thread (its abort flag); the limit counts from RUNNING, not while waiting;
C{core.get_methods} shows the limit in force.
"""

from __future__ import annotations

import errno
from typing import Any

import attrs
import pytest
import pytest_twisted

from conftest import ADMIN
from midjobs.client import Client, ClientCallError, JobAborted
from midjobs.config import Settings

from test_jobs import record, subscribed
from test_job_timeout_services import LIMIT

EXCEEDED = f"Job exceeded its time limit of {LIMIT} s"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, plugins=(*settings.plugins, "test_job_timeout_services"), default_timeout=1)


@pytest_twisted.ensureDeferred
async def test_async_and_thread_jobs_past_their_limit_end_aborted(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    async_id = await admin_client.call("timeouts.async_forever")
    thread_id = await admin_client.call("timeouts.thread_until_aborted")
    for job_id in (async_id, thread_id):
        aborted = await events.state(job_id, "ABORTED")
        assert aborted["error"] == EXCEEDED
        assert aborted["exc_info"]["type"] == "JobAborted"
        assert aborted["exc_info"]["errno"] == errno.ETIMEDOUT
        assert aborted["result"] is None
        stored = await record(admin_client, job_id)
        assert stored["state"] == "ABORTED" and stored["error"] == EXCEEDED

    # A client waiting on the job sees it aborted with that error.
    with pytest.raises(JobAborted) as error:
        await admin_client.call_job("timeouts.async_forever")
    assert str(error.value) == EXCEEDED and error.value.job["error"] == EXCEEDED

    # A new-style call is answered with the error itself.
    await admin_client.call("core.set_options", {"legacy_jobs": False})
    with pytest.raises(ClientCallError) as call_error:
        await admin_client.call("timeouts.thread_until_aborted")
    assert call_error.value.reason == EXCEEDED
    assert call_error.value.errname == "ETIMEDOUT"


@pytest_twisted.ensureDeferred
async def test_the_limit_is_logged_with_the_user(admin_client: Client, log_events: list[dict[str, Any]]) -> None:
    from twisted.logger import formatEvent

    events = await subscribed(admin_client)
    job_id = await admin_client.call("timeouts.async_forever")
    await events.state(job_id, "ABORTED")
    lines = [formatEvent(event) for event in log_events]
    assert f"Job {job_id} (timeouts.async_forever) of {ADMIN[0]} exceeded its time limit of {LIMIT} s" in lines


@pytest_twisted.ensureDeferred
async def test_the_limit_counts_from_running(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    holder = await admin_client.call("timeouts.slow")
    waiting = await admin_client.call("timeouts.behind_slow")
    # The holder runs past the waiting job's limit (and past none of its own
    # but the default of 1 s); the waiting job is not aborted meanwhile.
    held = await events.state(holder, "ABORTED")
    assert held["error"] == "Job exceeded its time limit of 1 s"
    states = [fields["state"] for _, fields in events.of(waiting)]
    assert "ABORTED" not in states
    running = await events.state(waiting, "RUNNING")
    aborted = await events.state(waiting, "ABORTED")
    assert aborted["error"] == EXCEEDED
    assert aborted["time_finished"] > running["time_started"]


@pytest_twisted.ensureDeferred
async def test_the_default_limit_applies_to_jobs_without_their_own(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    job_id = await admin_client.call("core.job_test", {"sleep": 30})
    aborted = await events.state(job_id, "ABORTED")
    assert aborted["error"] == "Job exceeded its time limit of 1 s"


@pytest_twisted.ensureDeferred
async def test_get_methods_shows_the_limit_in_force(admin_client: Client) -> None:
    methods = await admin_client.call("core.get_methods")
    assert methods["timeouts.async_forever"]["job_options"]["timeout"] == LIMIT
    assert methods["core.job_test"]["job_options"]["timeout"] == 1
