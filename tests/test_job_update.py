"""
C{core.job_update(id, {"progress": {...}})} (issue 15): the original
daemon's private method that sets a job's progress from elsewhere, with its
semantics; private, so only for full administrators on a connection with
C{private_methods}, and for the daemon's own code.

A daemon runs in this process on 127.0.0.1; the clients are real.
"""

from __future__ import annotations

import errno
from typing import Any, AsyncIterator

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor

from conftest import RunningDaemon
from gated_services import Gates
from midjobs.client import ClientCallError, JSONRPCError, connect
from midjobs.config import Settings

METHOD_NOT_FOUND = -32601


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, plugins=(*settings.plugins, "gated_services"))


def gates_of(daemon: RunningDaemon) -> Gates:
    return daemon.middleware.services["gated"].gates


async def user(daemon: RunningDaemon, admin: Any, username: str, roles: list[str]) -> Any:
    password = f"{username}-pass-123"
    await admin.call("user.create", {"username": username, "password": password, "roles": roles})
    client = await connect(daemon.ws_url, reactor=reactor)
    assert await client.login(username, password)
    await client.call("core.set_options", {"private_methods": True})
    return client


@pytest_twisted.async_yield_fixture
async def private_admin(admin_client: Any) -> AsyncIterator[Any]:
    await admin_client.call("core.set_options", {"private_methods": True})
    yield admin_client


async def progress_of(client: Any, job_id: int) -> dict[str, Any]:
    return (await client.call("core.get_jobs", [["id", "=", job_id]], {"get": True}))["progress"]


@pytest_twisted.ensureDeferred
async def test_progress_from_elsewhere(daemon: RunningDaemon, private_admin: Any) -> None:
    admin = private_admin
    job_id = await admin.call("gated.hold", "reported")
    await gates_of(daemon).started_one("reported")
    heard: list[dict[str, Any]] = []
    await admin.subscribe("core.get_jobs", lambda msg, c, id, fields: heard.append(fields) if id == job_id else None)
    update = {"progress": {"percent": 42.7, "description": "copying", "extra": {"bytes": 10}}}
    assert await admin.call("core.job_update", job_id, update) is None
    assert await progress_of(admin, job_id) == {"percent": 42, "description": "copying", "extra": {"bytes": 10}}
    # As in the original: percent alone, an empty description, a false extra change only the percent.
    await admin.call("core.job_update", job_id, {"progress": {"percent": 50}})
    await admin.call("core.job_update", job_id, {"progress": {"percent": 60, "description": "", "extra": {}}})
    assert await progress_of(admin, job_id) == {"percent": 60, "description": "copying", "extra": {"bytes": 10}}
    # No progress, or an empty one, changes nothing.
    await admin.call("core.job_update", job_id, {})
    await admin.call("core.job_update", job_id, {"progress": {}})
    # The daemon's own code may call it too.
    await daemon.middleware.call("core.job_update", job_id, {"progress": {"percent": 70, "description": "inside"}})
    await admin.call("gated.release", "reported")
    await admin.call_job("core.job_wait", job_id)
    assert [f["progress"]["percent"] for f in heard if f["state"] == "RUNNING"] == [42, 50, 60, 70]
    # A job that has ended keeps its progress, as the job's own reports do then.
    await admin.call("core.job_update", job_id, {"progress": {"percent": 5, "description": "late"}})
    assert await progress_of(admin, job_id) == {"percent": 100, "description": "inside", "extra": {"bytes": 10}}


@pytest_twisted.ensureDeferred
async def test_private_and_for_full_administrators(daemon: RunningDaemon, admin_client: Any) -> None:
    job_id = await admin_client.call("gated.hold", "private")
    await gates_of(daemon).started_one("private")
    update = {"progress": {"percent": 10}}
    # Without private_methods the method does not exist.
    with pytest.raises(JSONRPCError) as info:
        await admin_client.call("core.job_update", job_id, update)
    assert info.value.code == METHOD_NOT_FOUND
    # With it, a read-only administrator and a user who owns a job are refused.
    reader = await user(daemon, admin_client, "reader", ["READONLY_ADMIN"])
    owner = await user(daemon, admin_client, "owner", [])
    try:
        own = await owner.call("gated.hold", "owned")
        await gates_of(daemon).started_one("owned")
        for client, target in ((reader, job_id), (owner, own)):
            with pytest.raises(ClientCallError) as refused:
                await client.call("core.job_update", target, update)
            assert refused.value.errno == errno.EACCES
        assert (await progress_of(admin_client, own))["percent"] == 0
    finally:
        await reader.close()
        await owner.close()
    await admin_client.call("gated.release", "private")
    await admin_client.call("gated.release", "owned")


@pytest_twisted.ensureDeferred
async def test_bad_updates_are_refused(daemon: RunningDaemon, private_admin: Any) -> None:
    admin = private_admin
    job_id = await admin.call("gated.hold", "checked")
    await gates_of(daemon).started_one("checked")
    for data, attribute in [
        ("50", "data"),
        ({"progress": 50}, "data.progress"),
        ({"progress": {"description": "no percent"}}, "data.progress.percent"),
        ({"progress": {"percent": True}}, "data.progress.percent"),
        ({"progress": {"percent": 5, "description": 7}}, "data.progress.description"),
        ({"progress": {"percent": 5, "colour": "red"}}, "data.progress.colour"),
        ({"percent": 5}, "data.percent"),
    ]:
        with pytest.raises(ClientCallError) as info:
            await admin.call("core.job_update", job_id, data)
        assert info.value.errno == errno.EINVAL
        assert attribute in [e.attribute for e in info.value.errors], (data, info.value)
    with pytest.raises(ClientCallError) as missing:
        await admin.call("core.job_update", 9999, {"progress": {"percent": 5}})
    assert missing.value.errno == errno.ENOENT
    assert (await progress_of(admin, job_id))["percent"] == 0
    await admin.call("gated.release", "checked")
