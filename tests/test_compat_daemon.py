"""
The original daemon's job semantics over a real daemon (docs/compatibility.rst):
decorator callables that raise, a thread job stopping the original's way,
transient jobs listed while they run.  In memory in C{test_compat.py}.
"""

from __future__ import annotations

import errno
from typing import Any

import attrs
import pytest
import pytest_twisted

from midjobs.client import Client, ClientCallError
from midjobs.query import validate_options

from test_jobs import record, subscribed

COMPAT_SERVICES = "compat_services"


@pytest.fixture
def settings(settings: Any) -> Any:
    return attrs.evolve(settings, plugins=(*settings.plugins, COMPAT_SERVICES))


@pytest_twisted.ensureDeferred
async def test_a_description_callable_that_raises_leaves_the_job_without_one(admin_client: Client) -> None:
    job_id = await admin_client.call("compat.described")
    assert await admin_client.call_job("core.job_wait", job_id) == "ran"
    done = await record(admin_client, job_id)
    assert (done["state"], done["description"]) == ("SUCCESS", None)


@pytest_twisted.ensureDeferred
async def test_a_lock_callable_that_raises_fails_the_call_with_einval(admin_client: Client) -> None:
    with pytest.raises(ClientCallError) as error:
        await admin_client.call("compat.locked", {})
    assert error.value.errname == "EINVAL"
    assert error.value.reason == "Error handling job lock: 'lock'"
    assert await admin_client.call("core.get_jobs", [["method", "=", "compat.locked"]]) == []


@pytest_twisted.ensureDeferred
async def test_a_thread_job_raising_job_cancelled_exception_ends_aborted(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    job_id = await admin_client.call("compat.cancellable")
    await events.wait_for(lambda msg, id, f: id == job_id and f["progress"]["description"] == "waiting")
    await admin_client.call("core.job_abort", job_id)
    ended = await events.wait_for(lambda msg, id, f: id == job_id and f["state"] in ("SUCCESS", "FAILED", "ABORTED"))
    assert (ended["state"], ended["error"], ended["exc_info"]["errno"]) == ("ABORTED", "Job aborted", errno.ECANCELED)


@pytest_twisted.ensureDeferred
async def test_a_transient_job_is_listed_while_it_runs_never_recorded_and_silent(
    admin_client: Client, daemon: Any
) -> None:
    events = await subscribed(admin_client)
    service = daemon.middleware.services["compat"]
    job_id = await admin_client.call("compat.transient_wait")
    await service.transient_running
    [listed] = await admin_client.call("core.get_jobs", [["method", "=", "compat.transient_wait"]])
    assert (listed["id"], listed["state"], listed["transient"]) == (job_id, "RUNNING", True)
    await admin_client.call("core.job_abort", job_id)
    marker = await admin_client.call("core.job_test")
    await events.state(marker, "SUCCESS")
    assert await admin_client.call("core.get_jobs", [["id", "=", job_id]]) == []
    assert [id for msg, id, f in events.events if id == job_id] == []
    assert await daemon.middleware.job_store.query([["id", "=", job_id]], validate_options(None), frozenset()) == []
