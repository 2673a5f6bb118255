"""
The standard transfer fields of C{progress.extra} (L{midjobs.transfer_progress}),
in memory on a clock: the throttle, the moving average of the rate, the time
left, the merge with a job's own keys, a stalled transfer, the job's end.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from midjobs.job import Job, JobState
from midjobs.progress import JobProgressBuffer, Throttle, merge_extra
from midjobs.service import JobOptions
from midjobs.transfer_progress import RATE_WINDOW, TransferProgress, transfer_progress

KiB = 1024
MiB = 1024 * KiB


class Reactor(MemoryReactorClock):
    """
    A clock whose calls "from a thread" run at once (the test is the only thread).
    """

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


@pytest.fixture
def reactor() -> Reactor:
    return Reactor()


def running_job(reactor: Reactor) -> tuple[Job, Deferred[None]]:
    """
    A running async job that returns when the Deferred returned with it fires.
    """
    done: Deferred[None] = Deferred()

    async def run(job: Job) -> None:
        await done

    job = Job(reactor, "t.transfer", JobOptions(), run, [], is_async=True)
    job.id = 1
    job.start()
    return job, done


def extras(job: Job) -> list[Any]:
    """
    Every C{progress.extra} the job reports from now on.
    """
    seen: list[Any] = []
    job._progress_listeners.append(lambda progress: seen.append(progress["extra"]))
    return seen


def test_steady_transfer(reactor: Reactor) -> None:
    """
    1 MiB a second for 8 s, reported every 50 ms: at most one update a
    second, bytes never go back, the rate is the speed, the time left falls
    to 0 with the last byte.
    """
    job, _ = running_job(reactor)
    seen = extras(job)
    transfer = TransferProgress(job, interval=1.0)
    total = 8 * MiB
    transfer.expect(total)
    step = MiB // 20
    position = 0
    while position < total:
        reactor.advance(0.05)
        position += step
        transfer.moved(min(position, total))
    transfer.finish()
    # The first at once, then one a second, and the last one.
    assert 8 <= len(seen) <= 11
    positions = [extra["bytes"] for extra in seen]
    assert positions == sorted(positions)
    assert all(extra["total_bytes"] == total for extra in seen)
    assert seen[-1]["bytes"] == total and seen[-1]["eta_seconds"] == 0
    rates = [extra["rate"] for extra in seen if "rate" in extra]
    assert len(rates) >= 6
    assert all(0.9 * MiB < rate < 1.1 * MiB for rate in rates)
    assert abs(rates[-1] - MiB) < 0.02 * MiB
    etas = [extra["eta_seconds"] for extra in seen if "eta_seconds" in extra]
    assert etas == sorted(etas, reverse=True) and etas[-1] == 0
    assert abs(etas[0] - 7) < 0.5


def test_rate_is_a_moving_average(reactor: Reactor) -> None:
    """
    A jump from 1 MiB/s to 3 MiB/s after a long steady run: one second later
    the rate has moved a fifth of the way there, not all of it (time
    constant RATE_WINDOW).
    """
    job, _ = running_job(reactor)
    transfer = TransferProgress(job, interval=1.0)
    position = 0
    for _ in range(30):
        transfer.moved(position := position + MiB)
        reactor.advance(1.0)
    assert transfer.rate == pytest.approx(MiB)
    transfer.moved(position := position + 3 * MiB)
    reactor.advance(1.0)
    weight = 1 - math.exp(-1.0 / RATE_WINDOW)
    assert transfer.rate == pytest.approx(MiB + weight * 2 * MiB, rel=0.01)
    assert transfer.rate < 1.5 * MiB


def test_a_burst_at_the_start_weighs_for_its_time(reactor: Reactor) -> None:
    """
    4 MiB at once (buffers filling), then 1 MiB/s: after 4.5 s the rate is
    about the average since the start (7.5 MiB in 4.5 s), not the burst's
    (an average that starts from the first sample would still say 2.6 MiB/s),
    fading to 1 MiB/s.
    """
    job, _ = running_job(reactor)
    transfer = TransferProgress(job, interval=1.0)
    transfer.moved(1)
    reactor.advance(0.5)
    transfer.moved(position := 4 * MiB)
    for _ in range(7):
        reactor.advance(0.5)
        transfer.moved(position := position + MiB // 2)
    reactor.advance(0.5)
    assert transfer.rate == pytest.approx(7.5 * MiB / 4.5, rel=0.1)
    for _ in range(40):
        reactor.advance(0.5)
        transfer.moved(position := position + MiB // 2)
    assert transfer.rate == pytest.approx(MiB, rel=0.1)


def test_no_total_no_time_left(reactor: Reactor) -> None:
    job, _ = running_job(reactor)
    seen = extras(job)
    transfer = TransferProgress(job, interval=1.0)
    transfer.moved(100)
    reactor.advance(1.0)
    transfer.moved(300)
    reactor.advance(1.0)
    assert seen == [{"bytes": 100}, {"bytes": 300, "rate": 200}]


def test_positions_are_the_furthest(reactor: Reactor) -> None:
    """
    Two sides of one transfer report (the upload and the job that reads it):
    the furthest wins, the other adds nothing.
    """
    job, _ = running_job(reactor)
    transfer = transfer_progress(job)
    assert transfer_progress(job) is transfer
    transfer.moved(1000)
    transfer.moved(400)
    assert job.progress["extra"] == {"bytes": 1000}
    transfer.expect(500)
    reactor.advance(1.0)
    # Never less than what moved.
    assert job.progress["extra"] == {"bytes": 1000, "total_bytes": 1000, "rate": 0, "eta_seconds": 0}


def test_the_jobs_own_keys_stay(reactor: Reactor) -> None:
    job, _ = running_job(reactor)
    job.set_progress(extra={"files": 2, "bytes": "the job's"})
    transfer = TransferProgress(job, interval=1.0)
    transfer.moved(10)
    assert job.progress["extra"] == {"files": 2, "bytes": 10}
    # The job reports its own keys through a JobProgressBuffer: the transfer's stay.
    buffer = JobProgressBuffer(job)
    buffer.set_progress(50, "half", {"files": 3})
    assert job.progress == {"percent": 50, "description": "half", "extra": {"files": 3, "bytes": 10}}
    # An extra that is not a dict is the job's alone.
    job.set_progress(extra=["a", "list"])
    reactor.advance(1.0)
    transfer.moved(20)
    reactor.advance(1.0)
    assert job.progress["extra"] == ["a", "list"]


def test_merge_extra() -> None:
    assert merge_extra(None, {"bytes": 1}) == {"bytes": 1}
    assert merge_extra({"a": 1, "rate": 5}, {"bytes": 1}, ("rate", "bytes")) == {"a": 1, "bytes": 1}
    assert merge_extra("text", {"bytes": 1}) == "text"


def test_a_stalled_transfer_shows_the_rate_falling(reactor: Reactor) -> None:
    job, _ = running_job(reactor)
    seen = extras(job)
    transfer = TransferProgress(job, interval=1.0)
    transfer.expect(10 * MiB)
    for position in (MiB, 2 * MiB, 3 * MiB):
        transfer.moved(position)
        reactor.advance(1.0)
    before = seen[-1]
    assert before["rate"] == MiB
    reactor.advance(RATE_WINDOW)
    after = seen[-1]
    assert after["bytes"] == before["bytes"]
    assert after["rate"] < before["rate"] * 0.5
    assert after["eta_seconds"] > before["eta_seconds"]


def test_the_jobs_end_stops_everything(reactor: Reactor) -> None:
    job, done = running_job(reactor)
    seen = extras(job)
    transfer = transfer_progress(job)
    transfer.expect(10 * MiB)
    transfer.moved(MiB)
    transfer.moved(2 * MiB)
    assert reactor.getDelayedCalls()
    done.callback(None)
    assert job.state is JobState.SUCCESS
    assert reactor.getDelayedCalls() == []
    count = len(seen)
    transfer.moved(3 * MiB)
    reactor.advance(10)
    assert len(seen) == count
    # A new transfer for a new side would start afresh; this one is forgotten.
    assert transfer_progress(job) is not transfer


def test_throttle(reactor: Reactor) -> None:
    calls: list[float] = []
    throttle = Throttle(reactor, lambda: calls.append(reactor.seconds()), interval=1.0)
    throttle.request()
    throttle.request()
    reactor.advance(0.5)
    throttle.request()
    assert calls == [0]
    reactor.advance(0.5)
    assert calls == [0, 1.0]
    reactor.advance(5)
    throttle.request()
    assert calls == [0, 1.0, 6.0]
    throttle.request()
    throttle.flush()
    assert calls == [0, 1.0, 6.0, 6.0]
    throttle.request()
    throttle.cancel()
    reactor.advance(5)
    assert calls == [0, 1.0, 6.0, 6.0]


def test_a_jobs_own_extra_keeps_the_transfer_fields() -> None:
    """
    A job that sets its own C{extra} with C{set_progress} keeps the transfer
    fields an upload or download reported, unless it sets them itself.
    """
    from twisted.internet.testing import MemoryReactorClock

    from midjobs.job import Job
    from midjobs.service import JobOptions

    job = Job(MemoryReactorClock(), "test.move", JobOptions(), lambda job: None, [], is_async=True)
    job.set_progress(extra={"bytes": 10, "rate": 5.0})
    job.set_progress(50, extra={"files": 2})
    assert job.progress["extra"] == {"files": 2, "bytes": 10, "rate": 5.0}
    job.set_progress(extra={"files": 3, "bytes": 20})
    assert job.progress["extra"] == {"files": 3, "bytes": 20, "rate": 5.0}
    job.set_progress(extra=[1, 2])
    assert job.progress["extra"] == [1, 2]


def test_a_flush_from_a_thread_does_not_wait_for_the_reactor() -> None:
    """
    A thread job flushing its reports while the reactor is busy (or
    stopping, waiting for that very thread) goes on at once: its flush
    must not wait for the reactor thread.
    """
    from twisted.internet import reactor as running_reactor

    throttle = Throttle(running_reactor, lambda: None)
    returned = threading.Event()

    def job_thread() -> None:
        throttle.request()
        throttle.flush()
        returned.set()

    # A daemon thread: were the flush to wait for the reactor, a failure here would not hang the run.
    thread = threading.Thread(target=job_thread, daemon=True)
    thread.start()
    # The reactor thread is held here, as a stopping reactor waits for its pool.
    assert returned.wait(10)
    thread.join()
