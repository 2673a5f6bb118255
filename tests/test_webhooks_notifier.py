"""
The webhook notifier in memory, on a L{Clock}, with an outbox that fails
when told to: the back-off schedule, a job's end told once, and an outbox
that cannot be read or written (the notifier logs it and looks again later).
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent

from midjobs.job import JobState
from midjobs.notify import BackOff, NotifierState, Webhook, WebhookNotifier
from midjobs.notify._outbox import Claimed, Dropped, Notification


def test_the_back_off_doubles_up_to_its_maximum_and_gives_up() -> None:
    backoff = BackOff(first=1, maximum=600, attempts=100, give_up_after=86400)
    assert [backoff.delay(n) for n in range(1, 13)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]
    assert backoff.delay(10_000) == 600
    assert not backoff.gives_up(99, 86399)
    assert backoff.gives_up(100, 0) and backoff.gives_up(1, 86400)


class FlakyOutbox:
    """
    An outbox in memory whose next C{claim}s or C{add}s fail while C{failing} says so.
    """

    def __init__(self) -> None:
        self.rows: dict[int, Notification] = {}
        self.failing: set[str] = set()
        self.claims = 0

    def setup(self) -> Deferred[int]:
        return succeed(0)

    def count(self) -> Deferred[int]:
        return succeed(len(self.rows))

    def add(self, notifications: list[Notification], limit: int) -> Deferred[Dropped]:
        if "add" in self.failing:
            return fail(OSError(28, "No space left on device"))
        for n in notifications:
            row = len(self.rows) + 1
            self.rows[row] = attrs.evolve(n, id=row)
        return succeed(Dropped([], len(self.rows)))

    def claim(self, now: float, most: int, delay: Any, exclude: Any = ()) -> Deferred[Claimed]:
        self.claims += 1
        if "claim" in self.failing:
            return fail(OSError(5, "Input/output error"))
        return succeed(Claimed([], None, len(self.rows)))


@attrs.define(eq=False)
class FakeJob:
    id: int
    method: str = "core.job_test"
    state: JobState = JobState.SUCCESS

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "method": self.method, "state": self.state.value}


def tell_end(told: WebhookNotifier, job: FakeJob) -> None:
    told.ended(job, job.to_record())


def notifier(clock: Clock, outbox: FlakyOutbox) -> WebhookNotifier:
    hook = Webhook(url="http://127.0.0.1:9/hook", secret=b"k")
    return WebhookNotifier(clock, outbox, [hook])  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_a_job_end_is_told_once() -> None:
    clock, outbox = Clock(), FlakyOutbox()
    told = notifier(clock, outbox)
    await told.start()
    job = FakeJob(1)
    tell_end(told, job)
    tell_end(told, job)
    assert len(outbox.rows) == 1
    tell_end(told, FakeJob(2, state=JobState.RUNNING))  # no webhook wants it
    assert len(outbox.rows) == 1


@pytest_twisted.ensureDeferred
async def test_an_outbox_that_fails_is_logged_and_read_again_later(log_events: list[dict[str, Any]]) -> None:
    clock, outbox = Clock(), FlakyOutbox()
    told = notifier(clock, outbox)
    outbox.failing = {"claim", "add"}
    await told.start()
    assert told.state is NotifierState.RUNNING
    tell_end(told, FakeJob(1))
    failures = [formatEvent(e) for e in log_events if e.get("log_failure") is not None]
    assert failures == ["Writing the webhook outbox failed", "Writing the webhook outbox failed"]
    assert outbox.claims == 1
    outbox.failing = set()
    clock.advance(5)
    assert outbox.claims == 2
    tell_end(told, FakeJob(2))
    assert list(outbox.rows) == [1] and outbox.claims == 3
    await told.stop()
    assert told.state is NotifierState.STOPPED
