"""
Jobs: calls that run for a while, report progress and can be waited on or aborted.

A :class:`Job` is made by the middleware for each call of a method marked
:func:`~midjobs.service.job`, and handed to the :class:`JobsQueue`, which starts
it as soon as its lock allows.  Async job methods run as a Deferred made with
C{Deferred.fromCoroutine} (aborting cancels it); plain ones run in the
reactor's thread pool, and everything they touch on the job is safe to call
from that thread.

A job's life has named phases (L{JobPhase}): C{WAITING}, C{RUNNING},
C{ENDING} (its method stopped; its log's excerpt is read in the thread pool
and its final record recorded) and C{ENDED}.  The queue tells the
L{IJobObserver}s registered with it (L{JobsQueue.observe}) of each job's
addition, changes and end, each only once the store has made it durable.

A job may have a time limit (C{@job(timeout=...)}, or the queue's
C{default_timeout}), counted from the moment it starts running: past it the
job is aborted.  A running job that does not stop within L{ABORT_GRACE}
seconds of being aborted is recorded ABORTED anyway and its lock is freed;
what its method returns later is ignored.
"""

from __future__ import annotations

import copy
import datetime
import errno
import functools
import socket
import threading
import traceback
import types
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import blockingCallFromThread, deferToThreadPool
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

from . import wire_json
from .counts import NO_COUNTS, ICounts
from .errors import CallError, adapted, validation_errors
from .lifecycle import IJobObserver, IJobRecorder, JobAborted, JobCancelledException, JobPhase, JobRecord, JobState
from .locks import Admission, ILockManager, LocalLocks, Share
from .log_excerpt import read_excerpt
from .log_files import log_file
from .logs import logger
from .pipe import Pipes
from .reactor_loop import ReactorLoop
from .store._interfaces import IDurableWrites, IJobIds, IJobStore, StoreClosed, Written
from .store.ids import CountedJobIds
from .texts import cut

if TYPE_CHECKING:
    from .decorators import JobOptions

__all__ = [
    "ABORT_GRACE",
    "TRANSFER_KEYS",
    "AbortFlag",
    "Job",
    "JobAborted",
    "JobCancelledException",
    "JobPhase",
    "JobState",
    "JobTimedOut",
    "JobsQueue",
    "PipeNotOpen",
    "StoreRecorder",
    "keep_transfer_keys",
]

log = logger(__name__)

#: Called with a job's record (secrets included) each time it reports progress.
ProgressCallback = Callable[[dict[str, Any]], None]

#: Error classes L{Job.wait} raises as they are (C{raise_error_forward_classes}).
ErrorClasses = tuple[type[BaseException], ...]

#: What L{Job.wait} forwards by default: C{CallError} and its subclasses
#: (C{ValidationErrors}, L{JobAborted}); anything else becomes a C{CallError}.
FORWARDED_ERRORS: ErrorClasses = (CallError,)

#: Whether the caller of a new job may be handed a waiting job started with
#: these credentials (the C{credentials} of its record) instead.
SharePolicy = Callable[["Job", "dict[str, Any] | None"], bool]

#: Gives the caller of a new job (the second argument, never queued: its
#: C{message_ids} hold the caller's request id, if any) the waiting job
#: C{job_id} of another node that it shares (C{lock_queue_size}): a Deferred
#: firing with what the caller gets in place of a local L{Job}.  Set on
#: L{JobsQueue.remote_job} by whoever knows the other nodes.
RemoteJobs = Callable[[int, "Job"], "Deferred[Any]"]

#: Seconds a running job has to stop once it is aborted (by C{core.job_abort},
#: its time limit, or the daemon stopping).  An async job stops at once unless
#: its coroutine ignores the cancellation; a thread job must notice
#: C{job.aborted}.  One still running after this long is recorded ABORTED and
#: its lock freed: its thread (or coroutine) is left to finish on its own,
#: and what it returns then is ignored (and logged).
ABORT_GRACE = 10.0

#: The progress description of a job waiting behind a held lock.
WAITING_FOR_LOCK = "Waiting for lock {lock}"

#: The most bytes of arguments (as JSON) the finished jobs kept in memory
#: hold together: past it the oldest leave memory (and are read from the
#: history), whatever C{keep_finished} allows.  A call of 64 KiB made of
#: small objects is over a megabyte of Python objects.
KEEP_FINISHED_ARGUMENTS = 2 * 1024 * 1024

#: The C{progress.extra} keys of a job that moves bytes: C{bytes} moved so
#: far, C{total_bytes} when known, C{rate} in bytes per second (smoothed)
#: and C{eta_seconds} when the total is known.
TRANSFER_KEYS = ("bytes", "total_bytes", "rate", "eta_seconds")


def keep_transfer_keys(current: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """
    A job's new dict C{extra}, with the transfer fields of the C{current}
    extra that it does not set itself.
    """
    if not isinstance(current, dict):
        return extra
    kept = {key: current[key] for key in TRANSFER_KEYS if key in current and key not in extra}
    return {**extra, **kept} if kept else extra


class AbortFlag(threading.Event):
    """
    The event a job's abort sets, which also reads as a truth value: C{if
    job.aborted:} is true once the job is aborted (a plain C{threading.Event}
    would always be true).
    """

    def __bool__(self) -> bool:
        return self.is_set()


class JobTimedOut(JobAborted):
    """
    The job ran past its time limit and was aborted (errno C{ETIMEDOUT}).
    """

    def __init__(self, limit: float) -> None:
        super().__init__(f"Job exceeded its time limit of {_seconds(limit)} s")
        self.errno = errno.ETIMEDOUT


def _seconds(value: float) -> str:
    """
    A number of seconds as people write it: C{5}, C{0.5}.
    """
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class PipeNotOpen(CallError, ValueError):
    """
    The job needs a pipe its caller did not open.
    """

    def __init__(self, pipe: str) -> None:
        CallError.__init__(self, f"Pipe {pipe!r} is not open", errno.EINVAL)


#: Values that always have a JSON form, and that nothing changes in place.
_PLAIN_VALUES = frozenset({bool, int, str, type(None)})


def _plain(arguments: list[Any]) -> bool:
    """
    Whether each of C{arguments} is a plain value (L{_PLAIN_VALUES}).
    """
    return all(type(argument) in _PLAIN_VALUES for argument in arguments)


def _snapshot(arguments: list[Any]) -> list[Any]:
    """
    A copy of C{arguments} for the job's method, which it may change: a
    deep copy, unless each is a plain value (most calls) or one cannot be
    copied (an internal call's object: the method gets it as it is).
    """
    if not arguments or _plain(arguments):
        return list(arguments)
    try:
        return copy.deepcopy(arguments)
    except Exception:
        return list(arguments)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _in_thread() -> bool:
    return not isInIOThread()  # type: ignore[no-untyped-call]  # not annotated in Twisted


class Job:
    """
    One call of a job method.

    The method receives its Job and reports through it: L{set_progress},
    L{set_description}, C{logs_fd}, C{pipes}.  Callers wait with L{wait} (a
    Deferred) or, from a thread, L{wait_sync}, and may L{abort} it.

    @ivar id: the job's number, assigned when it is queued.
    @ivar aborted: an L{AbortFlag} (a C{threading.Event}) set when the job is
        aborted; thread jobs watch it (C{job.aborted.wait(1)} sleeps a second
        unless aborted), and C{if job.aborted:} tests it.  C{aborted_event}
        is the same object, by the original daemon's name.
    @ivar middleware: the middleware that made the job (C{None} for a job
        made outside one, as in tests).
    @ivar internal_data: a dict the job's code may keep anything in; it is
        not part of the job's record.
    @ivar on_progress_cb: called with the job's record (secrets included:
        it is the caller's own) each time the job reports progress, on the
        reactor thread (C{middleware.call(..., job_on_progress_cb=...)}).
    @ivar time_limit: seconds the job may run before it is aborted
        (L{JobTimedOut}), counted from L{start}; C{None} for no limit.  Its
        C{options.timeout} at first; the queue gives it its
        C{default_timeout} if it has none.
    @ivar waiting_for: the lock the job waits for while it is C{WAITING}
        behind another job (its progress description says so), else C{None}.
    @ivar node: the name of the daemon that runs the job (a node of a
        cluster), given with its id when it is queued.
    """

    def __init__(
        self,
        reactor: Any,
        method: str,
        options: JobOptions,
        run: Callable[..., Any],
        arguments: Sequence[Any],
        *,
        is_async: bool,
        leading: Sequence[Any] = (),
        pipes: Pipes | None = None,
        credentials: dict[str, Any] | None = None,
        owner: Any = None,
        logs_dir: Path | None = None,
        recorded_arguments: Sequence[Any] | None = None,
        redact_result: Callable[[Any], Any] | None = None,
        middleware: Any = None,
        on_progress_cb: ProgressCallback | None = None,
    ) -> None:
        self.reactor = reactor
        self.middleware = middleware
        self.on_progress_cb = on_progress_cb
        self.internal_data: dict[str, Any] = {}
        self._run = run
        self._leading = list(leading)
        self._is_async = is_async
        self._logs_dir = logs_dir
        self._deferred: Deferred[Any] | None = None
        self._waiters: list[Deferred[None]] = []
        self._error: BaseException | None = None
        #: Where the method raised C{_error}, for those it is raised to again (L{outcome}).
        self._error_traceback: types.TracebackType | None = None
        self._progress_listeners: list[Callable[[dict[str, Any]], None]] = []
        #: Held while a report changes C{progress}, from either thread.
        self._progress_lock = threading.Lock()
        #: The user among whose unfinished jobs its queue counts it (C{JobsQueue.max_per_user}).
        self._counted_for: int | None = None
        #: The jobs this one waits for now (L{wait} C{by} it).
        self._waiting_for: list[Job] = []

        self.id: int = 0
        self.node = ""
        self.method = method
        self.options = options
        #: The arguments the job was called with (its method gets a copy, L{start}).
        self.arguments = called_with = list(arguments)
        #: The arguments as records show them: with secrets redacted.
        self.recorded_arguments = called_with if recorded_arguments is None else list(recorded_arguments)
        #: Makes the result as records show it: with secrets redacted.
        self.redact_result = redact_result
        self.owner = owner
        self.credentials = credentials
        self.pipes = pipes or Pipes()
        self.lock_name = self._lock_name(called_with)
        self.message_ids: list[Any] = []
        self.description = self._initial_description(called_with)
        self.progress: dict[str, Any] = {"percent": 0, "description": "", "extra": None}
        self.state = JobState.WAITING
        self.result: Any = None
        self.result_encoding_error: str | None = None
        self.error: str | None = None
        self.exception: str | None = None
        self.exc_info: dict[str, Any] | None = None
        self.time_started = _now()
        self.time_finished: datetime.datetime | None = None
        self.logs_path: str | None = None
        self.logs_fd: Any = None
        self.logs_excerpt: str | None = None
        # A thread job watches its event from its own thread; an async job's
        # is made only if someone asks for it (on the reactor thread).
        self._aborted: AbortFlag | None = None if is_async else AbortFlag()
        #: Where the job is in its life (L{JobPhase}); C{state} is what the wire shows.
        self.phase = JobPhase.WAITING
        #: The queue the job reports its changes and its end to, once queued.
        self._queue: JobsQueue | None = None
        self.time_limit: float | None = options.timeout
        self.waiting_for: str | None = None
        #: Fires when the job's time limit is reached (while it runs).
        self._time_limit_call: IDelayedCall | None = None
        #: Fires L{ABORT_GRACE} seconds after a running job is aborted.
        self._grace_call: IDelayedCall | None = None
        #: When the job was recorded ABORTED without its method having returned.
        self._abandoned_at: datetime.datetime | None = None

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.method} {self.state.value}>"

    def _lock_name(self, arguments: list[Any]) -> str | None:
        """
        The lock the job takes, from the decorator's C{lock} (a callable of
        the arguments, maybe).

        @raise CallError: C{EINVAL}, the callable raised (logged).
        """
        try:
            return self.options.lock_name(arguments)
        except Exception as e:
            log.failure("Error handling the job lock of {method}", method=self.method, level=LogLevel.warn)
            raise CallError(f"Error handling job lock: {e}", errno.EINVAL) from None

    def _initial_description(self, arguments: list[Any]) -> str | None:
        """
        The decorator's C{description} of the arguments; C{None} (and a log
        line) if it raises: the job runs all the same.
        """
        if not self.options.description:
            return None
        try:
            description = self.options.description(*arguments)
        except Exception:
            log.failure("Error setting the description of a {method} job", method=self.method, level=LogLevel.warn)
            return None
        return cut(description) if isinstance(description, str) else description

    @property
    def aborted(self) -> AbortFlag:
        """
        Set when the job is aborted (see the class docstring).
        """
        if self._aborted is None:
            self._aborted = AbortFlag()
        return self._aborted

    @property
    def aborted_event(self) -> AbortFlag:
        """
        L{aborted}, by the original daemon's name.
        """
        return self.aborted

    @property
    def method_name(self) -> str:
        """
        C{method}, by the original daemon's name.
        """
        return self.method

    @property
    def args(self) -> list[Any]:
        """
        C{arguments}, by the original daemon's name.
        """
        return self.arguments

    @property
    def loop(self) -> ReactorLoop:
        """
        The reactor, under the scheduling names of an asyncio loop (the
        original daemon's C{job.loop}): see L{ReactorLoop}.
        """
        return ReactorLoop(self.reactor)

    @property
    def was_aborted(self) -> bool:
        """
        Whether L{abort} was called.
        """
        return self._aborted is not None and self._aborted.is_set()

    @property
    def started_by(self) -> str:
        """
        Who started the job, for the logs: the user name in its credentials,
        or C{"the daemon"}.
        """
        data = self.credentials.get("data") if self.credentials else None
        name = data.get("username") if isinstance(data, dict) else None
        return str(name) if name is not None else "the daemon"

    @property
    def ending(self) -> bool:
        """
        The job has stopped: its C{phase} is L{JobPhase.ENDING} (its end is
        being recorded: its C{state} is still the one it ran in and nobody
        has been told) or L{JobPhase.ENDED}.
        """
        return self.phase is JobPhase.ENDING or self.phase is JobPhase.ENDED

    # The job's own reports.

    def set_progress(
        self, percent: float | None = None, description: str | None = None, extra: Any = None
    ) -> None:
        """
        Report how far the job is: C{percent} (0 to 100, stored as an int),
        a C{description} of the current step, and any C{extra} JSON value.

        Arguments left C{None} keep their value.  Only a real change sends an
        event; C{on_progress_cb}, if any, hears of every report.  Safe to
        call from the job's thread.
        """
        # At once, from a thread too (the job reads back what it reported),
        # and whole: the reactor thread reports too (a transfer's figures).
        with self._progress_lock:
            if self.ending:
                # A method still running after its job was recorded ABORTED.
                return
            progress = dict(self.progress)
            if percent is not None:
                progress["percent"] = max(0, min(100, int(percent)))
            if description is not None:
                progress["description"] = description
            if extra is not None:
                # The transfer fields an upload or download keeps stay (midjobs.progress).
                progress["extra"] = keep_transfer_keys(progress["extra"], extra) if isinstance(extra, dict) else extra
            changed = progress != self.progress
            self.progress = progress
        if _in_thread():
            self.reactor.callFromThread(self._tell_progress, progress, changed)
        else:
            self._tell_progress(progress, changed)

    def _tell_progress(self, progress: dict[str, Any], changed: bool) -> None:
        """
        Tell who listens of the progress the job reported (on the reactor thread).
        """
        if self.ending:
            return
        if self.on_progress_cb is not None:
            self._tell_progress_cb(self.on_progress_cb)
        if changed:
            for listener in list(self._progress_listeners):
                listener(progress)
            self._changed()

    def _tell_progress_cb(self, callback: ProgressCallback) -> None:
        try:
            callback(self.to_record(raw_result=True))
        except Exception:
            log.failure(
                "Failed to run the progress callback of job {job_id} ({method})",
                job_id=self.id,
                method=self.method,
                level=LogLevel.warn,
            )

    def set_description(self, description: str | None) -> None:
        """
        Change what the job says it is doing.  Safe to call from the job's thread.
        """
        if isinstance(description, str):
            description = cut(description)
        if description != self.description and not self.ending:
            # At once, from a thread too: the job reads back what it set.
            self.description = description
            if _in_thread():
                self.reactor.callFromThread(self._changed)
            else:
                self._changed()

    def add_message_id(self, message_id: Any) -> None:
        """
        Record that the request C{message_id} shares this job (a full
        C{lock_queue_size} queue handed it over), and tell of it with a
        C{changed} event, so that a new-style caller learns the job's id.
        """
        self.message_ids.append(message_id)
        if not self.ending:
            self._changed()

    def logs_fd_write(self, data: bytes) -> Deferred[Any]:
        """
        Write C{data} to C{logs_fd} in the reactor's thread pool, so that an
        async job does not block the reactor on a slow disk:
        C{await job.logs_fd_write(b"...")}.
        """
        if self.logs_fd is None:
            raise ValueError(f"Job {self.id} ({self.method}) has no log file: declare it with @job(logs=True)")
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.logs_fd.write, data)

    def check_pipe(self, pipe: str) -> None:
        """
        Make sure the caller opened C{pipe} (C{"input"} or C{"output"}).

        @raise PipeNotOpen: (a C{ValueError}) it did not.
        """
        if getattr(self.pipes, pipe, None) is None:
            raise PipeNotOpen(pipe)

    # Waiting.

    def wait(
        self,
        timeout: float | None = None,
        raise_error: bool = False,
        raise_error_forward_classes: ErrorClasses = FORWARDED_ERRORS,
        *,
        by: Job | None = None,
    ) -> Deferred[Any]:
        """
        A Deferred that fires with the job's result when it ends.

        @param timeout: give up after this many seconds (C{TimeoutError}); the
            job goes on.
        @param raise_error: fail with the job's error if it failed or was
            aborted (L{JobAborted}), instead of firing with C{None}.
        @param raise_error_forward_classes: the errors that keep their class
            (by default C{CallError} and its subclasses, such as
            C{ValidationErrors} and L{JobAborted}); any other becomes a
            C{CallError} with its message.
        @param by: the job that waits (L{wrap} says so): it may not wait for
            a job that waits for it, directly or through others.
        @raise CallError: C{EDEADLK}, this job waits for C{by}.
        """
        waiter: Deferred[None] = Deferred(lambda d: self._waiters.remove(d))
        if self.state.finished:
            waiter.callback(None)
        else:
            if by is not None:
                by._start_waiting_for(self)
                waiter.addBoth(by._stop_waiting_for, self)
            self._waiters.append(waiter)
        result: Deferred[Any] = waiter.addCallback(
            lambda _: self.outcome(raise_error, raise_error_forward_classes)
        )
        if timeout is not None:
            result.addTimeout(timeout, self.reactor)
            result.addErrback(self._timed_out, timeout)
        return result

    def _timed_out(self, failure: Failure, timeout: float) -> Failure:
        if isinstance(failure.value, DeferredTimeoutError):
            raise TimeoutError(f"Job {self.id} did not end in {timeout:g} seconds")
        return failure

    def wait_sync(
        self,
        timeout: float | None = None,
        raise_error: bool = False,
        raise_error_forward_classes: ErrorClasses = FORWARDED_ERRORS,
        *,
        by: Job | None = None,
    ) -> Any:
        """
        L{wait} for a thread job: block the calling thread until the job ends.

        @raise TimeoutError: it did not end in C{timeout} seconds.
        @raise RuntimeError: called on the reactor thread, which must never block.
        """
        if not _in_thread():
            raise RuntimeError("wait_sync would block the reactor: use wait()")
        return blockingCallFromThread(
            self.reactor, lambda: self.wait(timeout, raise_error, raise_error_forward_classes, by=by)
        )

    def outcome(self, raise_error: bool = False, raise_error_forward_classes: ErrorClasses = FORWARDED_ERRORS) -> Any:
        """
        The result of the job, which has ended; with C{raise_error}, raise
        its error if it failed or was aborted (as L{wait} fails).
        """
        if raise_error and self.state in (JobState.FAILED, JobState.ABORTED):
            if isinstance(self._error, raise_error_forward_classes):
                # From where the job failed each time: each waiter's raise
                # does not add to the frames the next one sees.
                raise self._error.with_traceback(self._error_traceback)
            raise CallError(self.error or "Job failed")
        return self.result

    # Nesting.

    async def wrap(self, subjob: Job, raise_error_forward_classes: ErrorClasses = FORWARDED_ERRORS) -> Any:
        """
        Wait for C{subjob}, copying its progress to this job, and return its
        result (raising its error as L{wait} does).  A sub-job that was
        aborted raises L{JobAborted}: unless caught, this job ends ABORTED too.
        """
        waited = subjob.wait(raise_error=True, raise_error_forward_classes=raise_error_forward_classes, by=self)
        self._follow(subjob)
        try:
            return await waited
        finally:
            subjob._progress_listeners.remove(self.copy_progress)

    def wrap_sync(self, subjob: Job, raise_error_forward_classes: ErrorClasses = FORWARDED_ERRORS) -> Any:
        """
        L{wrap} for a thread job.
        """
        self.reactor.callFromThread(self._follow, subjob)
        try:
            return subjob.wait_sync(raise_error=True, raise_error_forward_classes=raise_error_forward_classes, by=self)
        finally:
            self.reactor.callFromThread(subjob._progress_listeners.remove, self.copy_progress)

    def _start_waiting_for(self, other: Job) -> None:
        """
        This job waits for C{other} from now on, unless C{other} waits for
        it (directly or through the jobs it waits for): then neither would end.

        @raise CallError: C{EDEADLK}.
        """
        seen: set[int] = set()
        waiting = [other]
        while waiting:
            job = waiting.pop()
            if job is self:
                raise CallError(f"Job {self.id} cannot wait for job {other.id}, which waits for it", errno.EDEADLK)
            if id(job) not in seen:
                seen.add(id(job))
                waiting.extend(job._waiting_for)
        self._waiting_for.append(other)

    def _stop_waiting_for(self, result: object, other: Job) -> object:
        self._waiting_for.remove(other)
        return result

    def _follow(self, subjob: Job) -> None:
        subjob._progress_listeners.append(self.copy_progress)
        self.copy_progress(subjob.progress)

    def copy_progress(self, progress: dict[str, Any]) -> None:
        """
        Show C{progress}, another job's (a record's C{progress} dict), as
        this job's own: a job that waits for or wraps another follows it.
        Its empty description or C{extra} is no report (as in the original
        daemon's C{wrap}): this job keeps its own.
        """
        self.set_progress(progress["percent"], progress["description"] or None, progress["extra"] or None)

    # Life cycle, driven by the queue.

    def abort(self, reason: str = "Job aborted") -> None:
        """
        Stop the job: a waiting one ends at once, a running async one has its
        Deferred cancelled, a running thread one sees C{aborted} set.  Blocked
        pipe reads and writes fail.  The job ends L{JobState.ABORTED}, with
        C{reason} as its error, once its method stops by raising (a thread
        job raises L{JobAborted}); a method that returns all the same ends
        the job SUCCESS, as in the original daemon (past its time limit, it
        ends ABORTED whatever it returns).

        A running job that has not stopped L{ABORT_GRACE} seconds later (a
        thread that does not look at C{aborted}, a coroutine that ignores its
        cancellation) is recorded ABORTED all the same and its lock is freed;
        what its method returns afterwards is ignored.
        """
        if _in_thread():
            self.reactor.callFromThread(self.abort, reason)
            return
        self._abort_with(JobAborted(reason))

    def _abort_with(self, error: JobAborted) -> None:
        if self.state.finished or self.ending or self.was_aborted:
            return
        self.aborted.set()
        self._error = error
        log.info("Job {job_id} ({method}) aborting: {reason}", job_id=self.id, method=self.method, reason=error.errmsg)
        if self.state is JobState.WAITING:
            self._finish(JobState.ABORTED)
            return
        self.pipes.abort(self._error)
        if self._deferred is not None and self._is_async:
            self._deferred.cancel()
        if not self.ending:
            self._grace_call = self.reactor.callLater(ABORT_GRACE, self._abandon)

    def _time_out(self) -> None:
        """
        The job's time limit is reached: abort it.
        """
        self._time_limit_call = None
        assert self.time_limit is not None
        log.warn(
            "Job {job_id} ({method}) of {user} exceeded its time limit of {limit} s",
            job_id=self.id,
            method=self.method,
            user=self.started_by,
            limit=_seconds(self.time_limit),
        )
        self._abort_with(JobTimedOut(self.time_limit))

    def _abandon(self) -> None:
        """
        The job was aborted L{ABORT_GRACE} seconds ago and its method still
        runs: record it ABORTED and free its lock without waiting for it.
        """
        self._grace_call = None
        if self.ending:
            return
        log.warn(
            "Job {job_id} ({method}) of {user} did not stop within {grace} s of its abort: recorded ABORTED and"
            " its lock freed while its {kind} still runs",
            job_id=self.id,
            method=self.method,
            user=self.started_by,
            grace=_seconds(ABORT_GRACE),
            kind="coroutine" if self._is_async else "thread",
        )
        self._abandoned_at = _now()
        self._finish(JobState.ABORTED)

    def _returned_late(self, outcome: str) -> None:
        """
        The method of a job recorded ABORTED by L{_abandon} ended after all:
        what it returned is ignored.
        """
        assert self._abandoned_at is not None
        log.warn(
            "Job {job_id} ({method}) {outcome} {seconds:.1f} s after it was recorded ABORTED: ignored",
            job_id=self.id,
            method=self.method,
            outcome=outcome,
            seconds=(_now() - self._abandoned_at).total_seconds(),
        )

    def note_waiting(self, lock: str) -> None:
        """
        Say that the job waits for C{lock}, held by another job: its progress
        description is "Waiting for lock <lock>" until it starts.  How long
        it has waited is the time since C{time_started} (when it was queued).
        """
        self.waiting_for = lock
        self.set_progress(description=WAITING_FOR_LOCK.format(lock=lock))

    def start(self) -> None:
        """
        Run the method; called by the queue once the job's lock is free.
        Its time limit, if any, counts from now.
        """
        self.state = JobState.RUNNING
        self.phase = JobPhase.RUNNING
        if self.waiting_for is not None:
            log.info(
                "Job {job_id} ({method}) starts after waiting {seconds:.1f} s for lock {lock}",
                job_id=self.id,
                method=self.method,
                seconds=(_now() - self.time_started).total_seconds(),
                lock=self.waiting_for,
            )
            self.waiting_for = None
            self.progress = {**self.progress, "description": ""}
        else:
            log.debug("Job {job_id} ({method}) started", job_id=self.id, method=self.method)
        if self.time_limit is not None:
            self._time_limit_call = self.reactor.callLater(self.time_limit, self._time_out)
        if self.options.logs and self._logs_dir is not None:
            self._logs_dir.mkdir(parents=True, exist_ok=True)
            path = log_file(self._logs_dir, self.id)
            self.logs_fd = open(path, "wb", buffering=0)
            self.logs_path = str(path)
        self._changed()
        # A copy, as the original daemon gives: what the method does to its
        # arguments changes neither C{arguments} nor the record.
        args = [*self._leading, self, *_snapshot(self.arguments)]
        if self._is_async:
            try:
                self._deferred = Deferred.fromCoroutine(self._run(*args))
            except BaseException:
                self._deferred = Deferred()
                self._deferred.errback()
        else:
            pool = self.reactor.getThreadPool()
            self._deferred = deferToThreadPool(self.reactor, pool, self._run, *args)
        self._deferred.addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, result: Any) -> None:
        if self.ending:
            self._returned_late("returned")
            return
        if isinstance(self._error, JobTimedOut):
            # Past its time limit: what it returned does not make it a success.
            self._finish(JobState.ABORTED)
            return
        if self.was_aborted:
            # As in the original daemon: aborted, it returned all the same
            # (a job that stops early raises JobAborted, or lets the
            # cancellation through).
            log.info(
                "Job {job_id} ({method}) returned after its abort: recorded SUCCESS",
                job_id=self.id,
                method=self.method,
            )
            self._error = None
        if type(result) not in _PLAIN_VALUES:
            try:
                wire_json.dumps(result)
            except (TypeError, ValueError) as e:
                self.result_encoding_error = str(e)
                result = None
        self.result = result
        if self.progress["percent"] != 100:
            self.progress = {**self.progress, "percent": 100}
        self._finish(JobState.SUCCESS)

    def _failed(self, failure: Failure) -> None:
        if self.ending:
            self._returned_late(f"failed ({failure.getErrorMessage()})")
            return
        if self.was_aborted or isinstance(failure.value, (CancelledError, JobAborted)):
            if not isinstance(self._error, JobAborted):
                raised = failure.value
                self._error = raised if isinstance(raised, JobAborted) else JobAborted()
            self._finish(JobState.ABORTED)
            return
        assert failure.value is not None
        error = adapted(failure.value)
        self._error = error
        self._error_traceback = error.__traceback__
        self.error = cut(str(error))
        trace = failure.getTracebackObject()  # type: ignore[no-untyped-call]  # not annotated in Twisted
        self.exception = cut("".join(traceback.format_exception(type(error), error, trace)))
        invalid = validation_errors(error)
        self.exc_info = {
            "repr": cut(repr(error)),
            "type": "VALIDATION" if invalid is not None else type(error).__name__,
            "errno": getattr(error, "errno", None),
            "extra": getattr(invalid or error, "extra", None),
        }
        if self.logs_fd is not None:
            self.logs_fd.write(self.exception.encode("utf-8", "replace"))
        if isinstance(error, CallError):
            log.warn(
                "Job {job_id} ({method}) failed: {error}", job_id=self.id, method=self.method, error=self.error
            )
        else:
            log.failure(
                "Job {job_id} ({method}) failed", failure, LogLevel.error, job_id=self.id, method=self.method
            )
        self._finish(JobState.FAILED)

    def _finish(self, state: JobState) -> None:
        """
        The job stops as C{state}: it enters L{JobPhase.ENDING}, its log is
        closed and its excerpt read (in the thread pool), its final record
        recorded; then it ends (L{_end}).
        """
        if state is JobState.ABORTED:
            self.error = cut(str(self._error.errmsg if isinstance(self._error, CallError) else "Job aborted"))
            code = self._error.errno if isinstance(self._error, JobAborted) else errno.ECANCELED
            self.exc_info = {"repr": cut(repr(self._error)), "type": "JobAborted", "errno": code, "extra": None}
        self.phase = JobPhase.ENDING
        for call in (self._time_limit_call, self._grace_call):
            if call is not None and call.active():
                call.cancel()
        self._time_limit_call = self._grace_call = None
        time_finished = _now()
        logs_fd, self.logs_fd = self.logs_fd, None
        if logs_fd is not None:
            logs_fd.close()
        if state is JobState.SUCCESS:
            self.pipes.close()
        else:
            self.pipes.abort(self._error or CallError(self.error or "Job failed"))
        log.emit(
            LogLevel.debug if state is JobState.SUCCESS else LogLevel.info,
            "Job {job_id} ({method}) ended {state}",
            job_id=self.id,
            method=self.method,
            state=state.value,
        )
        if logs_fd is None or self.logs_path is None:
            self._record_end(state, time_finished)
            return
        excerpt = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), read_excerpt, self.logs_path)
        excerpt.addCallbacks(self._excerpt_read, self._excerpt_failed)
        excerpt.addCallback(lambda _: self._record_end(state, time_finished))

    def _excerpt_read(self, excerpt: str) -> None:
        self.logs_excerpt = excerpt

    def _excerpt_failed(self, failure: Failure) -> None:
        log.failure(
            "Reading the log excerpt of job {job_id} ({method}) failed",
            failure,
            LogLevel.warn,
            job_id=self.id,
            method=self.method,
        )

    def _record_end(self, state: JobState, time_finished: datetime.datetime) -> None:
        """
        Build the job's final record and have its queue record it; end once
        that is durable.
        """
        record = self.to_record()
        record["state"] = state.value
        record["time_finished"] = time_finished
        ended = functools.partial(self._end, state, time_finished, record)
        if self._queue is None or not self._queue._job_ending(self, record, ended):
            ended()

    def _end(self, state: JobState, time_finished: datetime.datetime, record: JobRecord) -> None:
        """
        Tell of the job's end (L{JobPhase.ENDED}): its queue and its
        observers, then its waiters.
        """
        self.state = state
        self.time_finished = time_finished
        self.phase = JobPhase.ENDED
        if self._queue is not None:
            self._queue._job_ended(self, record)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _changed(self) -> None:
        if self._queue is not None:
            self._queue._job_changed(self)

    def to_record(self, raw_result: bool = False) -> dict[str, Any]:
        """
        The job as ``core.get_jobs`` shows it (C{docs/protocol.rst}, "The job record").

        @param raw_result: show the result as it is, secrets included (see
            L{midjobs.service.secret_result}); records the daemon keeps or
            sends never do.
        """
        result = self.result
        if not raw_result and result is not None and self.redact_result is not None:
            result = self.redact_result(result)
        return {
            "id": self.id,
            "message_ids": list(self.message_ids),
            "method": self.method,
            "arguments": self.recorded_arguments,
            "transient": self.options.transient,
            "description": self.description,
            "abortable": self.options.abortable,
            "logs_path": self.logs_path,
            "logs_excerpt": self.logs_excerpt,
            "progress": self.progress,
            "result": result,
            "result_encoding_error": self.result_encoding_error,
            "error": self.error,
            "exception": self.exception,
            "exc_info": self.exc_info,
            "state": self.state.value,
            "time_started": self.time_started,
            "time_finished": self.time_finished,
            "credentials": self.credentials,
            "node": self.node,
        }


def _same_credentials(new: Job, credentials: dict[str, Any] | None) -> bool:
    """
    The default L{SharePolicy}: the daemon's own calls, or the same credentials.
    """
    return new.credentials is None or new.credentials == credentials


def _argument_bytes(job: Job) -> int:
    """
    How much a finished C{job}'s arguments weigh: the bytes of their JSON
    (their characters for plain values; nothing for what has no JSON form).
    """
    arguments = job.recorded_arguments
    if not arguments:
        return 0
    if _plain(arguments):
        return sum(len(argument) for argument in arguments if type(argument) is str)
    try:
        return len(wire_json.dumps(arguments))
    except (TypeError, ValueError):
        return 0


def _no_remote_jobs(job_id: int, job: Job) -> Deferred[Any]:
    """
    The default L{RemoteJobs}: a daemon alone has no other node's jobs.
    """
    return fail(CallError(f"Job {job_id} does not exist", errno.ENOENT))


@implementer(IJobRecorder)
class StoreRecorder:
    """
    Records a queue's jobs in an L{IJobStore}: each job's creation and end
    durably, its changes in batches.  A store that provides
    L{IDurableWrites} (the SQL stores) tells of its durable writes by a
    call; any other is waited on through the Deferreds of its writes, which
    fire later (the store's I/O is elsewhere).
    """

    def __init__(self, store: IJobStore) -> None:
        self.store = store
        self._writes: IDurableWrites | None = IDurableWrites(store, None)

    def created(self, job: Job, written: Written) -> None:
        # Its record is built when it is written, so that the newest state is stored.
        if self._writes is not None:
            self._writes.created(job.id, job.to_record, written)
        else:
            self.store.record_created(job.id, job.to_record).addBoth(_tell_written, written)

    def changed(self, job: Job) -> None:
        self.store.record_changed(job.id, job.to_record)

    def ending(self, job: Job, record: JobRecord, ended: Callable[[], None]) -> None:
        written = functools.partial(self._end_recorded, job, record["state"], ended)
        if self._writes is not None:
            self._writes.finished(record, written)
        else:
            self.store.record_finished(record).addBoth(_tell_written, written)

    @staticmethod
    def _end_recorded(job: Job, state: str, ended: Callable[[], None], failure: Failure | None) -> None:
        """
        The end of C{job} is durable, or could not be recorded (logged): it ends all the same.
        """
        if failure is not None and isinstance(failure.value, StoreClosed):
            # A thread job that ended after the daemon stopped: it reads as cut off at the next start.
            log.info("Job {job_id} ({method}) ended {state} after the job store closed", job_id=job.id, method=job.method, state=state)
        elif failure is not None:
            log.error(
                "Job {job_id} ({method}) ended {state}, but its end could not be recorded: {error}",
                job_id=job.id, method=job.method, state=state, error=failure.getErrorMessage(),
            )  # fmt: skip
        ended()


def _tell_written(result: object, written: Written) -> None:
    """
    Tell C{written} how the write whose Deferred fired with C{result} went.
    """
    written(result if isinstance(result, Failure) else None)


#: What an L{IJobObserver} is told of a job whose creation is being recorded, held back until it is.
_Held = list[tuple[str, "JobRecord | None"]]


class JobsQueue:
    """
    Every job the daemon knows, and the order in which waiting jobs start.

    A job without a lock starts at once; jobs sharing a lock start one at a
    time, first come first served, as its L{ILockManager} (C{locks}) says
    (told of a lock freed on another node with L{lock_freed}).
    When as many jobs as the lock's C{lock_queue_size} wait, a new one is
    not queued: its caller gets the newest waiting job that
    C{may_share(new, its credentials)} allows (by default, one started with
    the same credentials), or C{EBUSY}; a waiting job of another node comes
    through L{remote_job}.  The newest C{keep_finished} finished jobs stay
    listed.

    Each queued job is numbered by C{ids} (an L{IJobIds}; by default counted
    from 1) and marked with the C{node} that runs it (by default the host
    name).

    Who watches the jobs registers an L{IJobObserver} (L{observe}); each is
    told, in the order they were registered, of each job's addition, changes
    and end; of its end with its final record.  With a
    C{store} (an L{IJobStore}), each job that is not transient is recorded
    (L{StoreRecorder}) before the observers hear of it: its creation as it
    is queued (its events wait until that is durable), its changes in
    batches, and its final record while it is L{JobPhase.ENDING}.

    A job that has no C{timeout} of its own gets C{default_timeout} (seconds,
    or C{None}: no limit).  A job queued behind a held lock says so in its
    progress description (L{Job.note_waiting}) until it starts.
    """

    def __init__(
        self,
        keep_finished: int = 1000,
        store: IJobStore | None = None,
        may_share: SharePolicy | None = None,
        default_timeout: float | None = None,
        *,
        ids: IJobIds | None = None,
        locks: ILockManager | None = None,
        node: str | None = None,
    ) -> None:
        #: The time limit of jobs whose method sets none (C{[jobs] default_timeout}).
        self.default_timeout = default_timeout
        #: Whether a new job's caller may be handed a waiting job instead (lock_queue_size).
        self._may_share = may_share or _same_credentials
        self._keep_finished = keep_finished
        self.store = store
        #: Makes the jobs durable before the observers hear of them.
        self._recorder = StoreRecorder(store) if store is not None else None
        self._observers: list[IJobObserver] = []
        #: The observers' methods, by what they are told (L{IJobObserver}).
        self._tellers: dict[str, list[Callable[[Job, Any], None]]] = {"added": [], "changed": [], "ended": []}
        #: The jobs whose creation is being recorded: who waits for it, and what the observers will be told.
        self._recording: dict[int, tuple[list[Deferred[Job]], _Held]] = {}
        #: The callers of L{add} who hear of their job once it has ended (it ended before it was recorded).
        self._told_at_end: dict[int, Deferred[Job]] = {}
        #: The jobs that could not be recorded: never listed, no events.
        self._unlisted: set[int] = set()
        self._jobs: dict[int, Job] = {}
        self._finished: deque[int] = deque()
        #: The bytes of arguments of each kept finished job that has some (L{_argument_bytes}), and their sum.
        self._finished_bytes: dict[int, int] = {}
        self._kept_bytes = 0
        self._waiting: list[Job] = []
        #: Where new jobs get their ids.
        self.ids: IJobIds = ids if ids is not None else CountedJobIds()
        #: Who holds each lock, and who waits for it.
        self.locks: ILockManager = locks if locks is not None else LocalLocks()
        #: The name of this daemon, the C{node} of its jobs.
        self.node = node if node is not None else socket.gethostname()
        #: Hands the caller of a new job a waiting job of another node that it shares.
        self.remote_job: RemoteJobs = _no_remote_jobs
        #: The locks whose acquisition is under way (an L{ILockManager} answering later), by the job asking.
        self._acquiring: dict[str, Job] = {}
        #: The jobs granted their lock by such a late answer, to start at the next scheduling.
        self._granted: set[Job] = set()
        self._scheduling = False
        self._reschedule = False
        #: How many unfinished jobs one stored user may have (C{[limits] jobs_per_user}; C{None}: no limit).
        self.max_per_user: int | None = None
        #: The unfinished jobs of each stored user, by user id.
        self._unfinished: dict[int, int] = {}
        #: Where a refusal is counted (C{limit_hit("jobs_per_user")}).
        self.counts: ICounts = NO_COUNTS

    def observe(self, observer: IJobObserver) -> None:
        """
        Tell C{observer} of every job from now on, after those registered before it.
        """
        self._observers.append(observer)
        self._gather_tellers()

    def unobserve(self, observer: IJobObserver) -> None:
        """
        Tell C{observer} nothing more.
        """
        self._observers.remove(observer)
        self._gather_tellers()

    def _gather_tellers(self) -> None:
        # New lists: a round of telling under way goes on with the observers it began with.
        self._tellers = {
            kind: [getattr(observer, kind) for observer in self._observers] for kind in ("added", "changed", "ended")
        }

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return (job for job in list(self._jobs.values()) if not job.options.transient)

    def listed(self) -> Iterator[Job]:
        """
        The jobs ``core.get_jobs`` lists: those recorded if there is a store,
        and, as in the original daemon, transient ones until they end (they
        are never recorded, and dropped at their end).
        """
        hidden = self._recording.keys() | self._unlisted
        return (job for job in list(self._jobs.values()) if job.id not in hidden)

    def get(self, job_id: int) -> Job:
        """
        The job numbered C{job_id}.

        @raise CallError: C{ENOENT}, there is none.
        """
        try:
            return self._jobs[job_id]
        except KeyError:
            raise CallError(f"Job {job_id} does not exist", errno.ENOENT) from None

    def forget(self, job_ids: Sequence[int]) -> list[int]:
        """
        Drop the finished jobs among C{job_ids} from memory: their history
        was deleted (C{core.job_delete}, C{core.jobs_prune}).  Jobs that have
        not ended, and ids the queue does not hold, are left alone.

        @return: the ids of the jobs dropped.
        """
        dropped = []
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is not None and job.state.finished:
                self._drop_finished(job_id)
                dropped.append(job_id)
        if dropped:
            gone = set(dropped)
            self._finished = deque(i for i in self._finished if i not in gone)
        return dropped

    def add(self, job: Job) -> Deferred[Any]:
        """
        Queue C{job}, or find the job it must share with (see C{lock_queue_size}).

        @return: a Deferred firing with the job once it may be told of: once
            it is recorded if there is a store.  It fails with a C{CallError}
            (C{EIO}) if the job cannot be recorded; the job is then aborted.
            A caller handed a waiting job gets that job instead (or what
            L{remote_job} gives for one of another node).
        @raise CallError: C{EBUSY}, the lock is held and its queue size is 0,
            or its queue is full of jobs the caller may not share (from a
            lock manager that answers later: as the Deferred's failure).
        """
        self._count(job)
        try:
            queued: Deferred[Any]
            if job.lock_name is None:
                job_id = self.ids.take()
                queued = self._queue(job, job_id, False) if job_id is not None else self._admitted(Admission.FREE, job)
            else:
                admission = self.locks.admit(
                    job, job.options.lock_queue_size, lambda credentials: self._may_share(job, credentials)
                )
                if isinstance(admission, Deferred):
                    queued = admission.addCallback(self._admitted, job).addErrback(self._not_queued, job)
                else:
                    queued = self._admitted(admission, job)
        except BaseException:
            self._uncount(job)
            raise
        return queued

    def _count(self, job: Job) -> None:
        """
        Count C{job} among its user's unfinished jobs from its call on (so
        that calls waiting for their admission count too), or refuse it.

        @raise CallError: C{EBUSY}, the user has C{max_per_user} already.
        """
        owner = getattr(job.owner, "user_id", None)
        if not isinstance(owner, int):
            return  # The daemon's own call, or the trusted local peer's.
        unfinished = self._unfinished.get(owner, 0)
        if self.max_per_user is not None and unfinished >= self.max_per_user:
            self.counts.limit_hit("jobs_per_user")
            raise CallError(f"Too many unfinished jobs ({self.max_per_user}) for this user", errno.EBUSY)
        self._unfinished[owner] = unfinished + 1
        job._counted_for = owner

    def _uncount(self, job: Job) -> None:
        """
        C{job} ended, or was never queued (its caller was handed another
        job, or refused): its user has one unfinished job less.
        """
        owner, job._counted_for = job._counted_for, None
        if owner is not None:
            left = self._unfinished.pop(owner) - 1
            if left:
                self._unfinished[owner] = left

    def _not_queued(self, failure: Failure, job: Job) -> Failure:
        """
        The call of C{job} failed: if the job was never queued (its lock's
        admission, or what followed it, failed), its place among its user's
        is free.
        """
        if job._queue is None:
            self._uncount(job)
        return failure

    def _admitted(self, admission: Admission | Share, job: Job) -> Deferred[Any]:
        """
        Number and queue C{job} as its lock's C{admission} says, or hand its
        caller the job it shares.
        """
        if isinstance(admission, Share):
            self._uncount(job)
            shared = self._jobs.get(admission.job_id)
            if shared is None:
                return self.remote_job(admission.job_id, job)
            return self.recorded(shared)
        job_id = self.ids.take()
        if job_id is None:
            available: Deferred[Any] = self.ids.available()
            available.addCallbacks(
                lambda _: self._admitted(admission, job), self._not_numbered, errbackArgs=(job,)
            )
            return available
        return self._queue(job, job_id, admission is Admission.BEHIND)

    def _not_numbered(self, failure: Failure, job: Job) -> Failure:
        """
        No id came for the admitted C{job}: it waits for its lock no more,
        and its place among its user's is free.
        """
        self._uncount(job)
        if job.lock_name is not None:
            self.locks.release(job)
        return failure

    def _queue(self, job: Job, job_id: int, behind: bool) -> Deferred[Job]:
        """
        Queue C{job} as number C{job_id} (C{behind} a held lock, maybe):
        record it, tell of it, start it if it may.
        """
        job.id = job_id
        job.node = self.node
        if job.time_limit is None:
            job.time_limit = self.default_timeout
        if job.lock_name is not None:
            self.locks.queued(job)
            if behind:
                # Before anyone hears of the job, so that its first record says why it waits.
                job.note_waiting(job.lock_name)
        job._queue = self
        caller: Deferred[Job] | None = None
        recorder = self._recorder
        if job.options.transient:
            self.ids.skipped(job_id)
        elif recorder is not None:
            self._recording[job_id] = ([], [])
            # The caller's own Deferred, fired once the creation is durable
            # (or at the job's end, if it ended first).
            caller = Deferred()
            # Before it starts, so that its first record comes first.
            recorder.created(job, functools.partial(self._creation_written, job, caller))
        self._jobs[job_id] = job
        self._waiting.append(job)
        self._tell(job, "added")
        self._schedule()
        return succeed(job) if caller is None else caller

    def recorded(self, job: Job) -> Deferred[Job]:
        """
        A Deferred firing with C{job} once its creation is durable and it may
        be told of (at once if it is, or if there is no store).
        """
        recording = self._recording.get(job.id)
        if recording is None:
            return succeed(job)
        d: Deferred[Job] = Deferred()
        recording[0].append(d)
        return d

    def _creation_written(self, job: Job, caller: Deferred[Job], failure: Failure | None) -> None:
        """
        The creation of C{job} is durable (or could not be recorded: the job
        is refused): tell of it what was held back, and its caller.
        """
        if failure is not None:
            self._not_recorded(failure, job, caller)
            return
        waiters, held = self._recording.pop(job.id)
        for kind, record in held:
            self._tell_observers(job, kind, record)
        for waiter in waiters:
            waiter.callback(job)
        if job.phase is JobPhase.ENDING:
            # It ended already (its end is being recorded, often in this very
            # write): the caller hears of the job once it has ended, as it
            # would have without a store.
            self._told_at_end[job.id] = caller
            return
        caller.callback(job)

    def _not_recorded(self, failure: Failure, job: Job, caller: Deferred[Job]) -> None:
        waiters, _ = self._recording.pop(job.id)
        self._unlisted.add(job.id)
        error = CallError(f"The job could not be recorded: {failure.getErrorMessage()}", errno.EIO)
        log.error("Job {job_id} ({method}) refused: {error}", job_id=job.id, method=job.method, error=error.errmsg)
        job.abort(error.errmsg)
        for waiter in waiters:
            waiter.errback(error)
        caller.errback(error)

    # What a queued job reports (L{Job._queue}).

    def _job_changed(self, job: Job) -> None:
        if job.options.transient:
            return
        if self._recorder is not None:
            self._recorder.changed(job)
        self._tell(job, "changed")

    def _job_ending(self, job: Job, record: JobRecord, ended: Callable[[], None]) -> bool:
        """
        C{job} is L{JobPhase.ENDING} with the final C{record}: have it
        recorded, and C{ended()} called once that is durable.

        @return: whether it is recorded; if not, the caller calls C{ended()}.
        """
        if self._recorder is None or job.options.transient:
            return False
        self._recorder.ending(job, record, ended)
        return True

    def _job_ended(self, job: Job, record: JobRecord) -> None:
        """
        C{job} ended (its end recorded): tell the observers, free its lock,
        start what may start.
        """
        self._tell(job, "ended", record)
        self._job_finished(job)
        told = self._told_at_end.pop(job.id, None) if self._told_at_end else None
        if told is not None:
            told.callback(job)

    def _tell(self, job: Job, kind: str, record: JobRecord | None = None) -> None:
        """
        Tell the observers of C{job}'s addition, change or end, or hold it
        back while its creation is being recorded.
        """
        if job.options.transient or not self._observers or job.id in self._unlisted:
            return
        recording = self._recording.get(job.id)
        if recording is None:
            for tell in self._tellers[kind]:
                try:
                    tell(job, record)
                except Exception:
                    log.failure("{tell} failed on job {job_id}", tell=tell, job_id=job.id)
            return
        # Held back until the job is recorded: with its record of now, if an observer wants it.
        if record is None:
            for observer in self._observers:
                if observer.listening():
                    record = job.to_record()
                    break
        recording[1].append((kind, record))

    def _tell_observers(self, job: Job, kind: str, record: JobRecord | None) -> None:
        for tell in self._tellers[kind]:
            try:
                tell(job, record)
            except Exception:
                log.failure("{tell} failed on job {job_id}", tell=tell, job_id=job.id)

    def _schedule(self) -> None:
        if self._scheduling:
            self._reschedule = True
            return
        self._scheduling = True
        try:
            self._reschedule = True
            while self._reschedule:
                self._reschedule = False
                self._start_ready()
        finally:
            self._scheduling = False

    def _start_ready(self) -> None:
        ready: list[Job] = []
        waiting: list[Job] = []
        blocked: set[str] = set()
        for job in self._waiting:
            lock = job.lock_name
            if job.ending:  # aborted while waiting: its end is being recorded
                waiting.append(job)
                continue
            if lock is not None and not self._may_start(job, lock, blocked):
                blocked.add(lock)
                waiting.append(job)
                continue
            ready.append(job)
        self._waiting = waiting
        for job in ready:
            if job.state is JobState.WAITING:
                job.start()

    def _may_start(self, job: Job, lock: str, blocked: set[str]) -> bool:
        """
        Whether the waiting C{job} now holds its C{lock}, the jobs before it
        in the queue having C{blocked} those locks.  A job that does not
        says that it waits.
        """
        if job in self._granted:
            self._granted.discard(job)
            return True
        if lock in self._acquiring:
            if self._acquiring[lock] is not job:
                self._note_waiting(job, lock)
            return False
        if lock in blocked:
            self._note_waiting(job, lock)
            return False
        answer = self.locks.acquire(job)
        if isinstance(answer, Deferred):
            self._acquiring[lock] = job
            answer.addCallbacks(self._acquired, self._not_acquired, callbackArgs=(job,), errbackArgs=(job,))
            # It may have answered already (and been granted).
            if job in self._granted:
                self._granted.discard(job)
                return True
            return False
        if not answer:
            self._note_waiting(job, lock)
        return bool(answer)

    @staticmethod
    def _note_waiting(job: Job, lock: str) -> None:
        if job.waiting_for != lock:
            job.note_waiting(lock)

    def _acquired(self, granted: bool, job: Job) -> None:
        """
        The lock manager answered later whether C{job} holds its lock.
        """
        lock = job.lock_name
        assert lock is not None
        del self._acquiring[lock]
        if not granted:
            # Asked again once a job of that lock ends, here or elsewhere (lock_freed).
            if not job.ending:
                self._note_waiting(job, lock)
            return
        if job.phase is JobPhase.ENDED:
            # Aborted while it asked, and already ended: it holds the lock for nothing.
            self.locks.release(job)
        elif not job.ending:
            self._granted.add(job)
        self._schedule()

    def _not_acquired(self, failure: Failure, job: Job) -> None:
        """
        The lock manager could not say whether C{job} holds its lock: the
        job is aborted (nothing would ask again).
        """
        lock = job.lock_name
        del self._acquiring[lock]  # type: ignore[arg-type]  # only jobs with a lock are asked
        log.error(
            "Job {job_id} ({method}) could not take its lock {lock}: {error}",
            job_id=job.id, method=job.method, lock=lock, error=failure.getErrorMessage(),
        )  # fmt: skip
        job.abort(f"The lock {lock} could not be taken: {failure.getErrorMessage()}")
        self._schedule()

    def lock_freed(self, lock: str) -> None:
        """
        A job of another node freed C{lock} (its lock manager heard of it):
        ask again for the jobs here that wait for it.
        """
        if self._waiting and any(job.lock_name == lock for job in self._waiting):
            self._schedule()

    def _job_finished(self, job: Job) -> None:
        if self._waiting and job in self._waiting:
            self._waiting.remove(job)
        self._uncount(job)
        if job.lock_name is not None:
            self.locks.release(job)
        if job.options.transient or job.id in self._unlisted:
            del self._jobs[job.id]
            self._unlisted.discard(job.id)
        else:
            self._finished.append(job.id)
            size = _argument_bytes(job)
            if size:
                self._finished_bytes[job.id] = size
                self._kept_bytes += size
            while len(self._finished) > self._keep_finished or self._kept_bytes > KEEP_FINISHED_ARGUMENTS:
                self._drop_finished(self._finished.popleft())
        if self._waiting:
            self._schedule()

    def _drop_finished(self, job_id: int) -> None:
        """
        The finished job C{job_id} leaves memory (its history keeps it).
        """
        self._jobs.pop(job_id, None)
        self._kept_bytes -= self._finished_bytes.pop(job_id, 0)

    def abort_all(self, reason: str) -> None:
        """
        Abort every job that has not ended (the daemon is stopping).
        """
        for job in list(self._jobs.values()):
            if not job.state.finished:
                job.abort(reason)
