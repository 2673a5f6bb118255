"""
Job time limits, in memory on a L{MemoryReactorClock}: C{@job(timeout=...)}
and the queue's C{default_timeout} abort a job that runs too long, counted
from the moment it starts running; a job that does not stop within
L{ABORT_GRACE} of its abort is recorded ABORTED and its lock freed anyway.
Over a real daemon in C{test_job_timeout_daemon.py}.
"""

from __future__ import annotations

import errno
from typing import Any, Callable

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent

from midjobs.job import ABORT_GRACE, Job, JobsQueue, JobState
from midjobs.service import JobOptions, job


class HeldThreads:
    """
    A thread pool whose calls never run on their own: the test decides
    when (and whether) each "thread" returns.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[[bool, Any], None], Callable[..., Any], tuple[Any, ...]]] = []

    def callInThreadWithCallback(self, on_result: Callable[[bool, Any], None], func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.calls.append((on_result, func, args))

    def finish(self, index: int, result: Any) -> None:
        on_result, _, _ = self.calls[index]
        on_result(True, result)


class ThreadReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} with a held thread pool; calls from "threads"
    (the test itself) run at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.threads = HeldThreads()

    def getThreadPool(self) -> HeldThreads:
        return self.threads

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


@pytest.fixture
def reactor() -> ThreadReactor:
    return ThreadReactor()


@pytest.fixture
def log_lines(log_events: list[dict[str, Any]]) -> Any:
    return lambda text: [formatEvent(e) for e in log_events if text in formatEvent(e)]


def async_job(reactor: Any, run: Callable[..., Any], *, name: str = "t.async", **options: Any) -> Job:
    return Job(reactor, name, JobOptions(**options), run, [], is_async=True)


def thread_job(reactor: Any, *, name: str = "t.thread", **options: Any) -> Job:
    return Job(reactor, name, JobOptions(**options), lambda job: None, [], is_async=False)


def waits_forever(seen: list[BaseException]) -> Callable[[Job], Any]:
    async def run(job: Job) -> None:
        try:
            await Deferred()
        except BaseException as e:
            seen.append(e)
            raise

    return run


def test_an_async_job_past_its_limit_is_cancelled_and_ends_aborted(reactor: ThreadReactor, log_lines: Any) -> None:
    queue = JobsQueue()
    seen: list[BaseException] = []
    job = async_job(reactor, waits_forever(seen), timeout=5)
    queue.add(job)
    assert job.state is JobState.RUNNING
    reactor.advance(4.9)
    assert job.state is JobState.RUNNING and not seen

    reactor.advance(0.1)
    assert job.state is JobState.ABORTED
    assert [type(e) for e in seen] == [CancelledError]
    assert job.error == "Job exceeded its time limit of 5 s"
    assert job.exc_info is not None
    assert job.exc_info["type"] == "JobAborted" and job.exc_info["errno"] == errno.ETIMEDOUT
    assert job.to_record()["error"] == "Job exceeded its time limit of 5 s"
    assert f"Job {job.id} (t.async) of the daemon exceeded its time limit of 5 s" in log_lines("exceeded its time limit")
    # Nothing is left on the clock: neither the limit nor a grace period.
    assert reactor.getDelayedCalls() == []


def test_a_job_that_ends_in_time_leaves_no_timer(reactor: ThreadReactor) -> None:
    queue = JobsQueue()
    gate: Deferred[str] = Deferred()

    async def run(job: Job) -> str:
        return await gate

    job = async_job(reactor, run, timeout=5)
    queue.add(job)
    reactor.advance(4)
    gate.callback("done")
    assert job.state is JobState.SUCCESS and job.result == "done"
    assert reactor.getDelayedCalls() == []
    reactor.advance(10)
    assert job.state is JobState.SUCCESS


def test_the_limit_counts_from_running_not_waiting(reactor: ThreadReactor) -> None:
    queue = JobsQueue()
    first_gate: Deferred[None] = Deferred()

    async def first_run(job: Job) -> None:
        await first_gate

    first = async_job(reactor, first_run, lock="L")
    second = async_job(reactor, waits_forever([]), lock="L", timeout=5)
    queue.add(first)
    queue.add(second)
    assert second.state is JobState.WAITING
    reactor.advance(8)
    assert second.state is JobState.WAITING

    first_gate.callback(None)
    assert second.state is JobState.RUNNING
    reactor.advance(4.9)
    assert second.state is JobState.RUNNING
    reactor.advance(0.1)
    assert second.state is JobState.ABORTED
    assert second.error == "Job exceeded its time limit of 5 s"


def test_the_queues_default_applies_to_jobs_without_their_own(reactor: ThreadReactor) -> None:
    queue = JobsQueue(default_timeout=3)
    plain = async_job(reactor, waits_forever([]))
    own = async_job(reactor, waits_forever([]), timeout=0.5)
    queue.add(plain)
    queue.add(own)
    assert (plain.time_limit, own.time_limit) == (3, 0.5)
    reactor.advance(0.5)
    assert own.state is JobState.ABORTED and own.error == "Job exceeded its time limit of 0.5 s"
    assert plain.state is JobState.RUNNING
    reactor.advance(2.5)
    assert plain.state is JobState.ABORTED and plain.error == "Job exceeded its time limit of 3 s"


def test_no_limit_by_default(reactor: ThreadReactor) -> None:
    queue = JobsQueue()
    job = async_job(reactor, waits_forever([]))
    queue.add(job)
    assert job.time_limit is None and reactor.getDelayedCalls() == []


def test_a_thread_job_sees_its_abort_flag_then_is_recorded_aborted_after_the_grace(
    reactor: ThreadReactor, log_lines: Any
) -> None:
    queue = JobsQueue()
    ended: list[str] = []
    stuck = thread_job(reactor, lock="L", timeout=5)
    after = thread_job(reactor, lock="L")
    queue.add(stuck)
    queue.add(after)
    stuck.wait().addCallback(lambda _: ended.append(stuck.state.value))
    assert len(reactor.threads.calls) == 1

    reactor.advance(5)
    assert stuck.aborted.is_set()
    # The thread has its grace period to notice: still running, the lock still held.
    assert stuck.state is JobState.RUNNING and after.state is JobState.WAITING
    reactor.advance(ABORT_GRACE - 0.1)
    assert stuck.state is JobState.RUNNING and not ended

    reactor.advance(0.1)
    assert stuck.state is JobState.ABORTED and ended == ["ABORTED"]
    assert stuck.error == "Job exceeded its time limit of 5 s"
    assert log_lines("did not stop within") == [
        f"Job {stuck.id} (t.thread) of the daemon did not stop within 10 s of its abort: recorded ABORTED and"
        " its lock freed while its thread still runs"
    ]
    # Its lock is free: the next job runs.
    assert after.state is JobState.RUNNING and len(reactor.threads.calls) == 2

    # What the thread does when it finally returns changes nothing.
    record = stuck.to_record()
    stuck.set_progress(50, "still going")
    reactor.threads.finish(0, "late result")
    assert stuck.to_record() == record
    assert stuck.state is JobState.ABORTED and stuck.result is None
    assert len(log_lines("after it was recorded ABORTED: ignored")) == 1
    assert after.state is JobState.RUNNING


def test_a_thread_job_that_stops_in_its_grace_ends_as_usual(reactor: ThreadReactor) -> None:
    queue = JobsQueue()
    job = thread_job(reactor, timeout=1)
    queue.add(job)
    reactor.advance(1)
    assert job.aborted.is_set() and job.state is JobState.RUNNING
    reactor.threads.finish(0, "stopped")
    assert job.state is JobState.ABORTED and job.error == "Job exceeded its time limit of 1 s"
    assert reactor.getDelayedCalls() == []


def test_a_coroutine_that_ignores_its_cancellation_is_abandoned_after_the_grace(reactor: ThreadReactor) -> None:
    queue = JobsQueue()
    cleanup: Deferred[None] = Deferred()

    async def stubborn(job: Job) -> str:
        try:
            await Deferred()
        except CancelledError:
            await cleanup
        return "finished anyway"

    job = async_job(reactor, stubborn, timeout=2)
    queue.add(job)
    reactor.advance(2)
    assert job.state is JobState.RUNNING
    reactor.advance(ABORT_GRACE)
    assert job.state is JobState.ABORTED
    cleanup.callback(None)
    assert job.state is JobState.ABORTED and job.result is None


def test_any_abort_of_a_running_job_has_the_grace(reactor: ThreadReactor) -> None:
    queue = JobsQueue()
    job = thread_job(reactor, lock="L")
    queue.add(job)
    job.abort("stop it")
    reactor.advance(ABORT_GRACE)
    assert job.state is JobState.ABORTED and job.error == "stop it"
    assert job.exc_info is not None and job.exc_info["errno"] == errno.ECANCELED


def test_a_job_aborted_while_waiting_never_starts_its_timer(reactor: ThreadReactor) -> None:
    queue = JobsQueue(default_timeout=1)
    holder = thread_job(reactor, lock="L")
    waiting = thread_job(reactor, lock="L")
    queue.add(holder)
    queue.add(waiting)
    waiting.abort()
    assert waiting.state is JobState.ABORTED and waiting.error == "Job aborted"
    assert [call.getTime() for call in reactor.getDelayedCalls()] == [1]


def test_timeout_is_a_job_option_shown_by_get_methods() -> None:
    @job(timeout=90)
    def limited(self: Any, job: Job) -> None: ...

    from midjobs.service import method_spec

    options = method_spec(limited).job
    assert options is not None and options.timeout == 90
    assert options.to_wire()["timeout"] == 90
    assert JobOptions().to_wire()["timeout"] is None
    assert JobOptions().to_wire(default_timeout=600)["timeout"] == 600
    assert JobOptions(timeout=5).to_wire(default_timeout=600)["timeout"] == 5


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "10", True])
def test_a_timeout_is_a_positive_number(bad: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        job(timeout=bad)
