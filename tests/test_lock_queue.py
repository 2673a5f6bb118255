"""
C{lock_queue_size} over real connections: a full queue hands its last waiting
job only to the identity that queued it or to a full administrator (anyone
else gets C{EBUSY}, as in the original), and a new-style caller learns the id
of the job it shares from a C{changed} event carrying its message id.
"""

from __future__ import annotations

import errno
from typing import Any

import attrs
import pytest
import pytest_twisted

from conftest import RunningDaemon
from midjobs.client import Client, ClientCallError
from midjobs.config import Settings

from test_identities import Events, create_user, log_in, password_of  # noqa: F401

BUSY = "This job is already being performed by another user"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, plugins=(*settings.plugins, "test_lock_queue_services"))



async def message_ids(client: Client, job_id: int) -> list[Any]:
    job = await client.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
    return job["message_ids"]


@pytest_twisted.ensureDeferred
async def test_a_full_queue_is_shared_only_with_its_owner_or_an_admin(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client]
) -> None:
    events = Events()
    await admin_client.subscribe("core.get_jobs", events)
    for name in ("alice", "bob"):
        await create_user(admin_client, name, ["RUNNER"])
    alice = await log_in(daemon, connections, "alice")
    bob = await log_in(daemon, connections, "bob")
    running = await admin_client.call("lockq.queued", "first")
    await events.wait_for(lambda msg, id, f: id == running and f["state"] == "RUNNING")
    waiting = await alice.call("lockq.queued", "second")
    assert waiting != running

    # The queue is full: bob may not have alice's job, not even its id.
    with pytest.raises(ClientCallError) as info:
        await bob.call("lockq.queued", "third")
    assert (info.value.errno, info.value.errname, info.value.reason) == (errno.EBUSY, "EBUSY", BUSY)
    assert await bob.call("core.get_jobs") == []

    # alice (another session of hers too) and a full administrator share it.
    assert await alice.call("lockq.queued", "again") == waiting
    again = await log_in(daemon, connections, "alice")
    assert await again.call("lockq.queued", "again") == waiting
    assert await admin_client.call("lockq.queued", "admin") == waiting
    assert len(await message_ids(admin_client, waiting)) == 4

    await admin_client.call("lockq.release", "first")
    await admin_client.call("lockq.release", "second")
    done = await events.wait_for(lambda msg, id, f: id == waiting and f["state"] == "SUCCESS")
    assert done["result"] == "second"
    assert len(await admin_client.call("core.get_jobs", [["method", "=", "lockq.queued"]])) == 2


@pytest_twisted.ensureDeferred
async def test_a_new_style_caller_learns_the_shared_job_from_a_changed_event(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client]
) -> None:
    await create_user(admin_client, "alice", ["RUNNER"])
    alice = await log_in(daemon, connections, "alice")
    running = await admin_client.call("lockq.queued", "first")
    waiting = await alice.call("lockq.queued", "second")

    new_style = await log_in(daemon, connections, "alice")
    await new_style.call("core.set_options", {"legacy_jobs": False})
    events = Events()
    await new_style.subscribe("core.get_jobs", events)
    before = await message_ids(new_style, waiting)
    answer = new_style.call("lockq.queued", "shared")
    # The job's record gains the request's id, and a changed event says so at once.
    fields = await events.wait_for(
        lambda msg, id, f: msg == "changed" and id == waiting and len(f["message_ids"]) == len(before) + 1
    )
    assert fields["message_ids"][: len(before)] == before
    assert fields["state"] == "WAITING"
    assert not answer.called

    await admin_client.call("lockq.release", "first")
    await admin_client.call("lockq.release", "second")
    # Its answer is the shared job's result.
    assert await answer == "second"
    assert running != waiting
