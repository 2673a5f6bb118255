"""
The original daemon's job semantics, in memory (docs/compatibility.rst): what
a plugin written for it finds on its Job, and how its jobs end.  Over a real
daemon in C{test_compat_daemon.py}.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from midjobs.errors import CallError, ValidationErrors
from midjobs.job import Job, JobAborted, JobCancelledException, JobsQueue, JobState
from midjobs.pipe import InputPipes, Pipe
from midjobs.service import JobOptions

from test_lifecycle import Told
from test_job_timeout import ThreadReactor, async_job, log_lines, reactor, thread_job  # noqa: F401


def returns(value: Any) -> Any:
    async def run(job: Job, *args: Any) -> Any:
        return value

    return run


async def forever(job: Job) -> None:
    await Deferred()


def raises(error: BaseException) -> Any:
    async def run(job: Job) -> Any:
        raise error

    return run


# Callables of the decorator.


def test_a_description_callable_that_raises_is_logged_and_the_job_runs_without_one(
    reactor: ThreadReactor, log_lines: Any
) -> None:
    job = Job(reactor, "t.described", JobOptions(description=lambda name: name.upper()), returns(1), [None], is_async=True)
    assert job.description is None
    JobsQueue().add(job)
    assert job.state is JobState.SUCCESS and job.result == 1
    assert len(log_lines("Error setting the description of a t.described job")) == 1


def test_a_lock_callable_that_raises_fails_the_call_with_einval(reactor: ThreadReactor, log_lines: Any) -> None:
    with pytest.raises(CallError) as error:
        Job(reactor, "t.locked", JobOptions(lock=lambda args: args[3]), returns(1), [], is_async=True)
    assert error.value.errno == errno.EINVAL
    assert error.value.errmsg == "Error handling job lock: list index out of range"
    assert len(log_lines("Error handling the job lock of t.locked")) == 1


# Aborting.


def test_a_thread_job_that_returns_after_its_abort_ends_success(reactor: ThreadReactor) -> None:
    # As in the original: what happened is reported, the method returned.
    job = thread_job(reactor, lock="L")
    JobsQueue().add(job)
    job.abort()
    assert job.state is JobState.RUNNING and job.aborted
    reactor.threads.finish(0, "done anyway")
    assert job.state is JobState.SUCCESS
    assert (job.result, job.error, job.exc_info) == ("done anyway", None, None)
    assert reactor.getDelayedCalls() == []


def test_a_job_past_its_time_limit_that_returns_still_ends_aborted(reactor: ThreadReactor) -> None:
    # The time limit is midjobs' own: its verdict is kept.
    job = thread_job(reactor, timeout=1)
    JobsQueue().add(job)
    reactor.advance(1)
    reactor.threads.finish(0, "stopped")
    assert job.state is JobState.ABORTED and job.exc_info["errno"] == errno.ETIMEDOUT


@pytest.mark.parametrize("error", [JobCancelledException(), JobAborted("given up")])
def test_a_job_raising_job_cancelled_exception_ends_aborted(reactor: ThreadReactor, error: JobAborted) -> None:
    job = async_job(reactor, raises(error))
    JobsQueue().add(job)
    assert job.state is JobState.ABORTED
    assert job.error == error.errmsg and job.exc_info["errno"] == errno.ECANCELED


def test_job_cancelled_exception_is_job_aborted() -> None:
    assert JobCancelledException is JobAborted
    assert JobCancelledException().errmsg == "Job aborted"


def test_aborted_is_the_aborted_event_and_false_until_the_abort(reactor: ThreadReactor) -> None:
    job = thread_job(reactor)
    JobsQueue().add(job)
    assert job.aborted_event is job.aborted
    assert not job.aborted and not job.aborted_event.is_set()
    job.abort()
    assert job.aborted and job.aborted_event.is_set() and job.aborted.wait(0)


def test_an_async_jobs_aborted_flag_truth_tests_the_same(reactor: ThreadReactor) -> None:
    job = async_job(reactor, forever)
    JobsQueue().add(job)
    assert not job.aborted
    job.abort()
    assert job.aborted and job.state is JobState.ABORTED


def test_a_waiting_job_is_aborted_at_once(reactor: ThreadReactor) -> None:
    queue = JobsQueue()
    holder, waiting = thread_job(reactor, lock="L"), thread_job(reactor, lock="L")
    queue.add(holder)
    queue.add(waiting)
    waiting.abort()
    assert waiting.state is JobState.ABORTED and waiting.error == "Job aborted"
    assert len(reactor.threads.calls) == 1


# Waiting and wrapping.


async def _outcome(d: Deferred[Any]) -> Any:
    return await d


def _failure_of(d: Deferred[Any]) -> BaseException:
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert len(failures) == 1, "the Deferred did not fail"
    return failures[0].value


def test_wait_forwards_only_the_classes_asked_for(reactor: ThreadReactor) -> None:
    job = async_job(reactor, raises(ValueError("bad value")))
    JobsQueue().add(job)
    plain = _failure_of(job.wait(raise_error=True))
    assert type(plain) is CallError and plain.errmsg == "bad value"
    forwarded = _failure_of(job.wait(raise_error=True, raise_error_forward_classes=(ValueError,)))
    assert type(forwarded) is ValueError
    assert job.outcome(raise_error=False) is None


def test_wait_forwards_call_errors_by_default(reactor: ThreadReactor) -> None:
    job = async_job(reactor, raises(ValidationErrors([])))
    JobsQueue().add(job)
    assert type(_failure_of(job.wait(raise_error=True))) is ValidationErrors
    narrowed = _failure_of(job.wait(raise_error=True, raise_error_forward_classes=(KeyError,)))
    assert type(narrowed) is CallError


def test_wrap_takes_the_forward_classes(reactor: ThreadReactor) -> None:
    queue = JobsQueue()
    subjob = async_job(reactor, raises(KeyError("k")))
    seen: list[BaseException] = []

    async def parent(job: Job) -> None:
        try:
            await job.wrap(subjob, raise_error_forward_classes=(KeyError,))
        except BaseException as e:
            seen.append(e)
            raise

    queue.add(subjob)
    queue.add(async_job(reactor, parent))
    assert [type(e) for e in seen] == [KeyError]


def test_wrapping_an_aborted_subjob_raises_and_the_parent_ends_aborted(reactor: ThreadReactor) -> None:
    queue = JobsQueue()
    subjob = async_job(reactor, forever)

    async def parent(job: Job) -> Any:
        return await job.wrap(subjob)

    wrapping = async_job(reactor, parent)
    queue.add(subjob)
    queue.add(wrapping)
    subjob.abort("stopped by hand")
    assert subjob.state is JobState.ABORTED and subjob.error == "stopped by hand"
    assert wrapping.state is JobState.ABORTED and wrapping.error == "stopped by hand"


# Transient jobs.


def test_a_transient_job_is_listed_while_it_runs_and_sends_no_events(reactor: ThreadReactor) -> None:
    told: list[tuple[int, str, Any]] = []
    queue = JobsQueue()
    queue.observe(Told(told))
    job = thread_job(reactor, transient=True)
    queue.add(job)
    assert list(queue.listed()) == [job] and job.to_record()["transient"] is True
    reactor.threads.finish(0, None)
    assert job.state is JobState.SUCCESS
    assert list(queue.listed()) == [] and told == []
    with pytest.raises(CallError) as error:
        queue.get(job.id)
    assert error.value.errno == errno.ENOENT


# Progress callbacks.


def test_on_progress_cb_gets_the_job_record_at_each_report(reactor: ThreadReactor) -> None:
    seen: list[dict[str, Any]] = []
    job = Job(reactor, "t.cb", JobOptions(), lambda job: None, [], is_async=False, on_progress_cb=seen.append)
    JobsQueue().add(job)
    job.set_progress(40, "copying")
    job.set_progress(40, "copying")
    job.set_progress(90, extra={"bytes": 9})
    assert [(r["id"], r["progress"]) for r in seen] == [
        (job.id, {"percent": 40, "description": "copying", "extra": None}),
        (job.id, {"percent": 40, "description": "copying", "extra": None}),
        (job.id, {"percent": 90, "description": "copying", "extra": {"bytes": 9}}),
    ]


def test_a_failing_on_progress_cb_is_logged_and_changes_nothing(reactor: ThreadReactor, log_lines: Any) -> None:
    def broken(record: dict[str, Any]) -> None:
        raise RuntimeError("callback broke")

    job = Job(reactor, "t.cb", JobOptions(), lambda job: None, [], is_async=False, on_progress_cb=broken)
    JobsQueue().add(job)
    job.set_progress(10)
    assert job.progress["percent"] == 10
    assert len(log_lines("Failed to run the progress callback of job")) == 1


# The original's names.


def test_the_originals_names_on_a_job(reactor: ThreadReactor) -> None:
    middleware = object()
    job = Job(reactor, "t.names", JobOptions(), lambda job, a: None, [1], is_async=False, middleware=middleware)
    assert job.method_name == "t.names" and job.args == [1]
    assert job.middleware is middleware
    job.internal_data["messages"] = ["kept"]
    assert job.internal_data == {"messages": ["kept"]}
    called: list[str] = []
    job.loop.call_later(2, called.append, "later")
    job.loop.call_soon(called.append, "soon")
    job.loop.call_soon_threadsafe(called.append, "from a thread")
    assert job.loop.time() == reactor.seconds()
    reactor.advance(0)
    assert called == ["from a thread", "soon"]
    reactor.advance(2)
    assert called[-1] == "later"


def test_logs_fd_write(reactor: ThreadReactor, tmp_path: Any) -> None:
    job = Job(reactor, "t.logs", JobOptions(logs=True), lambda job: None, [], is_async=False, logs_dir=tmp_path)
    JobsQueue().add(job)
    written: list[Any] = []

    async def write() -> None:
        await job.logs_fd_write(b"one line\n")
        written.append(True)

    Deferred.fromCoroutine(write())
    # The write runs in the reactor's thread pool (held here): run it.
    on_result, func, args = reactor.threads.calls[-1]
    on_result(True, func(*args))
    assert written == [True]
    reactor.threads.finish(0, None)
    # Its log's excerpt is read in the thread pool too: run it.
    on_result, func, args = reactor.threads.calls[-1]
    on_result(True, func(*args))
    assert job.logs_excerpt == "one line\n"


def test_the_originals_names_on_input_pipes(reactor: ThreadReactor) -> None:
    first, second = Pipe(reactor), Pipe(reactor)
    inputs = InputPipes(first)
    assert inputs.first_pipe is first
    inputs.add_pipe(second)
    assert inputs.arrived == (first, second)
