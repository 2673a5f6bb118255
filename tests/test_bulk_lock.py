"""
C{core.bulk} as in the original daemon (issue 15): bulks of one method run
under the lock C{bulk:<method>}, one after another, and each status carries
the C{job_id} of the job its call started (null for a plain method).

A daemon runs in this process on 127.0.0.1; the clients are real.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import pytest_twisted

from conftest import RunningDaemon
from midjobs.config import Settings
from gated_services import Gates

GATED = "gated_services"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, plugins=(*settings.plugins, GATED))


def gates_of(daemon: RunningDaemon) -> Gates:
    return daemon.middleware.services["gated"].gates


async def record(client: Any, job_id: int) -> dict[str, Any]:
    return await client.call("core.get_jobs", [["id", "=", job_id]], {"get": True})


@pytest_twisted.ensureDeferred
async def test_two_bulks_of_one_method_do_not_interleave(daemon: RunningDaemon, admin_client: Any) -> None:
    gates = gates_of(daemon)
    first = await admin_client.call("core.bulk", "gated.hold", [["a1"], ["a2"]])
    await gates.started_one("a1")
    second = await admin_client.call("core.bulk", "gated.hold", [["b1"]])
    # The second waits for the first's lock, as in the original daemon.
    waiting = await record(admin_client, second)
    assert waiting["state"] == "WAITING"
    assert "bulk:gated.hold" in waiting["progress"]["description"]
    # A bulk of another method does not wait for it.
    other = await admin_client.call_job("core.bulk", "core.ping", [[]])
    assert other == [{"job_id": None, "result": "pong", "error": None}]
    await admin_client.call("gated.release", "a1")
    await gates.started_one("a2")
    assert (await record(admin_client, second))["state"] == "WAITING"
    await admin_client.call("gated.release", "a2")
    await gates.started_one("b1")
    await admin_client.call("gated.release", "b1")
    assert len(await admin_client.call_job("core.job_wait", second)) == 1
    assert gates.started == ["a1", "a2", "b1"]
    ended = await record(admin_client, first)
    assert ended["state"] == "SUCCESS" and [s["error"] for s in ended["result"]] == [None, None]


@pytest_twisted.ensureDeferred
async def test_every_bulk_waits_its_turn(daemon: RunningDaemon, admin_client: Any) -> None:
    """
    No bulk is handed another's job: the original's default
    C{lock_queue_size} of 5 would give a sixth caller the fifth's job (and
    its statuses, for calls it did not make); here each one is queued.
    """
    gates = gates_of(daemon)
    holder = await admin_client.call("core.bulk", "gated.hold", [["holder"]])
    await gates.started_one("holder")
    queued = [await admin_client.call("core.bulk", "gated.hold", [[f"q{i}"]]) for i in range(7)]
    assert len(set(queued)) == 7 and holder not in queued
    await admin_client.call("gated.release", "holder")
    for i in range(7):
        await gates.started_one(f"q{i}")
        await admin_client.call("gated.release", f"q{i}")
    for job_id in queued:
        assert len(await admin_client.call_job("core.job_wait", job_id)) == 1
    assert gates.started == ["holder", *(f"q{i}" for i in range(7))]


@pytest_twisted.ensureDeferred
async def test_each_status_names_the_job_its_call_started(daemon: RunningDaemon, admin_client: Any) -> None:
    statuses = await admin_client.call_job(
        "core.bulk", "core.job_test", [[{}], [{"error": "it broke"}], ["not a dict"]]
    )
    ok, failed, refused = statuses
    assert list(ok) == ["job_id", "result", "error"]
    assert ok["result"] is True and ok["error"] is None
    assert (await record(admin_client, ok["job_id"]))["method"] == "core.job_test"
    assert failed["result"] is None and "it broke" in failed["error"]
    assert (await record(admin_client, failed["job_id"]))["state"] == "FAILED"
    # A call that started no job (refused before it was queued) has none.
    assert refused["job_id"] is None and refused["error"]
    # A plain method, and one that does not exist: no job either.
    plain = await admin_client.call_job("core.bulk", "sample.add", [[1, 2], ["x"]])
    assert plain[0] == {"job_id": None, "result": 3, "error": None}
    assert plain[1]["job_id"] is None and plain[1]["error"]
    missing = await admin_client.call_job("core.bulk", "no.such_method", [[]])
    assert missing == [{"job_id": None, "result": None, "error": missing[0]["error"]}]
    assert missing[0]["error"]
