"""
A job waiting behind a held lock says why in its progress description,
"Waiting for lock <name>", from its very first record (no extra event) until
it starts; how long it has waited is the time since its C{time_started}.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from midjobs.client import Client
from midjobs.job import Job, JobsQueue, JobState
from midjobs.service import JobOptions

from test_jobs import record, subscribed
from test_lifecycle import Told


def test_the_first_record_of_a_job_behind_a_lock_says_why_it_waits() -> None:
    reactor = MemoryReactorClock()
    events: list[tuple[int, str, dict[str, Any]]] = []
    queue = JobsQueue()
    queue.observe(Told(events))
    gate: Deferred[None] = Deferred()

    async def hold(job: Job) -> None:
        await gate

    async def quick(job: Job) -> str:
        return "done"

    holder = Job(reactor, "t.hold", JobOptions(lock="disk"), hold, [], is_async=True)
    free = Job(reactor, "t.free", JobOptions(lock="other"), quick, [], is_async=True)
    waiter = Job(reactor, "t.wait", JobOptions(lock="disk"), quick, [], is_async=True)
    for job in (holder, free, waiter):
        queue.add(job)
    assert all(rec["progress"]["description"] == "" for id, kind, rec in events if id != waiter.id)
    assert [(kind, rec["state"], rec["progress"]["description"]) for id, kind, rec in events if id == waiter.id] == [
        ("added", "WAITING", "Waiting for lock disk")
    ]
    assert waiter.waiting_for == "disk"

    gate.callback(None)
    assert waiter.state is JobState.SUCCESS and waiter.waiting_for is None
    waiter_events = [(kind, rec["state"], rec["progress"]["description"]) for id, kind, rec in events if id == waiter.id]
    assert waiter_events == [
        ("added", "WAITING", "Waiting for lock disk"),
        ("changed", "RUNNING", ""),
        ("changed", "SUCCESS", ""),
    ]


@pytest_twisted.ensureDeferred
async def test_a_waiting_job_shows_its_lock_until_it_runs(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    holder = await admin_client.call("core.job_test", {"sleep": 30, "lock": "W"})
    await events.state(holder, "RUNNING")
    waiter = await admin_client.call("core.job_test", {"sleep": 0, "lock": "W"})
    second = await admin_client.call("core.job_test", {"sleep": 0, "lock": "W"})

    for job_id in (waiter, second):
        waiting = await record(admin_client, job_id)
        assert waiting["state"] == "WAITING"
        assert waiting["progress"]["description"] == "Waiting for lock W"
        # How long it waits: since time_started, when it was queued.
        assert waiting["time_started"] is not None and waiting["time_finished"] is None
    assert (await record(admin_client, holder))["progress"]["description"] == ""

    await admin_client.call("core.job_abort", holder)
    running = await events.state(waiter, "RUNNING")
    assert running["progress"]["description"] == ""
    done = await events.state(second, "SUCCESS")
    assert done["progress"]["description"] == ""
    # The first event already said why it waited; nothing more until it ran.
    assert [(msg, f["state"]) for msg, f in events.of(waiter)][:2] == [("added", "WAITING"), ("changed", "RUNNING")]
    assert events.of(waiter)[0][1]["progress"]["description"] == "Waiting for lock W"


def test_a_wait_that_times_out_raises_the_builtin_timeout_error() -> None:
    """
    As its docstring says: a plugin's C{except TimeoutError} (or
    C{asyncio.TimeoutError}) catches it; the job goes on.
    """
    reactor = MemoryReactorClock()
    gate: Deferred[None] = Deferred()

    async def hold(job: Job) -> None:
        await gate

    held = Job(reactor, "t.hold", JobOptions(), hold, [], is_async=True)
    JobsQueue().add(held)
    waited = held.wait(timeout=5)
    reactor.advance(5)
    failure = waited.result
    waited.addErrback(lambda _: None)
    assert type(failure.value) is TimeoutError
    assert str(failure.value) == f"Job {held.id} did not end in 5 seconds"
    assert held.state is JobState.RUNNING
    gate.callback(None)
    assert held.state is JobState.SUCCESS
