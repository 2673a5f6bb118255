"""
Stopping without losing work: the drain.

When the daemon is asked to stop (C{SIGTERM}), it drains before it closes:
it takes no new jobs from its clients (L{DaemonStopping}, C{ESHUTDOWN}),
aborts at once the jobs that wait for a lock (they have not started, and
would start only to be cut off), and gives the running ones up to
C{[jobs] drain_timeout} seconds to end.  Then it aborts those left with
L{STOPPED} and waits until their ends are recorded: an aborted job that
does not stop is recorded anyway after L{midjobs.job.ABORT_GRACE}, so that
wait is bounded too.  L{Drain.cut_short} (a second C{SIGTERM}) ends either
wait at once.

L{Drain} is that sequence for one L{JobsQueue}; the daemon drives it and
the middleware asks it whether a client may start a job.
"""

from __future__ import annotations

from enum import Enum, auto
import errno
from typing import Any

from twisted.internet.defer import Deferred, succeed

from .errors import CallError
from .job import Job, JobsQueue, JobState
from .logs import logger

__all__ = ["STOPPED", "STOPPING", "DaemonStopping", "Drain", "DrainPhase"]

log = logger(__name__)

#: The error of a job that was waiting for a lock when the drain began.
STOPPING = "The daemon is stopping"
#: The error of a job still running when the drain ended.
STOPPED = "The daemon was stopped"


class DaemonStopping(CallError):
    """
    A client asked for a new job while the daemon drains (C{ESHUTDOWN}).
    """

    def __init__(self) -> None:
        super().__init__(STOPPING, errno.ESHUTDOWN)


class DrainPhase(Enum):
    """
    Where a daemon is on its way out.
    """

    #: Not stopping: jobs are taken.
    SERVING = auto()
    #: Asked to stop: no new jobs; the running ones have until the deadline.
    DRAINING = auto()
    #: The deadline passed (or the drain was cut short): the jobs left are
    #: aborted and their ends recorded.
    ABORTING = auto()
    #: Every job has ended; the daemon closes.
    DRAINED = auto()


class Drain:
    """
    The drain of one daemon's jobs (see the module docstring).

    @ivar phase: a L{DrainPhase}.
    @ivar cut_short_by: what ended the drain early (C{"SIGTERM"}), or L{None}.
    """

    def __init__(self, reactor: Any, jobs: JobsQueue) -> None:
        self._reactor = reactor
        self._jobs = jobs
        self.phase = DrainPhase.SERVING
        self.cut_short_by: str | None = None
        self._deadline: float | None = None
        #: The jobs the current wait is for.
        self._left: set[Job] = set()
        #: Fires when the current wait is over (every job ended, the deadline, or L{cut_short}).
        self._wait: Deferred[None] | None = None
        self._deadline_call: Any = None

    @property
    def accepting(self) -> bool:
        """
        Whether clients may start jobs.
        """
        return self.phase is DrainPhase.SERVING

    def check_accepting(self) -> None:
        """
        @raise DaemonStopping: the daemon drains.
        """
        if self.phase is not DrainPhase.SERVING:
            raise DaemonStopping()

    @property
    def jobs_left(self) -> int:
        """
        How many jobs the drain still waits for.
        """
        return len(self._left)

    @property
    def seconds_left(self) -> float | None:
        """
        Seconds until the running jobs are aborted (L{None} unless draining).
        """
        if self.phase is not DrainPhase.DRAINING or self._deadline is None:
            return None
        remaining: float = self._deadline - self._reactor.seconds()
        return max(0.0, remaining)

    def status(self) -> dict[str, Any]:
        """
        The drain as C{system.shutdown_status} and C{/_health?full} show it:
        C{phase} (C{"SERVING"}, C{"DRAINING"}, C{"ABORTING"}, C{"DRAINED"}),
        C{jobs_left} and C{seconds_left} (rounded up to a second, L{None}
        unless draining).
        """
        seconds = self.seconds_left
        return {
            "phase": self.phase.name,
            "jobs_left": self.jobs_left,
            "seconds_left": None if seconds is None else int(-(-seconds // 1)),
        }

    def begin(self, timeout: float) -> Deferred[None]:
        """
        Take no new jobs, abort the waiting ones with L{STOPPING}, and give
        the running ones C{timeout} seconds.

        @return: fires when no job is left, when C{timeout} has passed, or
            when the drain is cut short; call L{abort_rest} then.
        """
        if self.phase is not DrainPhase.SERVING:
            raise RuntimeError(f"the drain has begun already ({self.phase.name})")
        self.phase = DrainPhase.DRAINING
        self._deadline = self._reactor.seconds() + timeout
        for job in self._unfinished():
            if job.state is JobState.WAITING:
                job.abort(STOPPING)
        # Those aborted are being recorded: the store writes that before it closes.
        self._start_wait([job for job in self._unfinished() if job.state is JobState.RUNNING])
        if self._left:
            self._deadline_call = self._reactor.callLater(timeout, self._time_is_up)
        log.info(
            "Draining: {jobs} job(s) running, {timeout} s at most for them to end",
            jobs=len(self._left),
            timeout=timeout,
        )
        return self._current_wait()

    def track(self, job: Job) -> None:
        """
        Wait for C{job} too: a job a running job started while draining.
        """
        if self.phase is DrainPhase.DRAINING and not job.state.finished and job not in self._left:
            self._left.add(job)
            job.wait().addBoth(self._ended, job)

    def abort_rest(self) -> Deferred[None]:
        """
        Abort the jobs left with L{STOPPED}.

        @return: fires once their ends are recorded (each within
            L{midjobs.job.ABORT_GRACE}), or at once if the drain was cut short.
        """
        if self._deadline_call is not None and self._deadline_call.active():
            self._deadline_call.cancel()
        self._deadline_call = None
        self.phase = DrainPhase.ABORTING
        left = self._unfinished()
        if left:
            log.warn("Aborting {jobs} job(s) still running: {reason}", jobs=len(left), reason=STOPPED)
        self._jobs.abort_all(STOPPED)
        if self.cut_short_by is not None:
            self._finish_wait()
            return succeed(None)
        self._start_wait(left)
        return self._current_wait()

    def cut_short(self, why: str) -> None:
        """
        Stop waiting at once (a second C{SIGTERM}): the jobs left are
        aborted, and the daemon does not wait for their ends.  A job that
        has not ended by the time the daemon closes reads as cut off at the
        next start.
        """
        if self.phase not in (DrainPhase.DRAINING, DrainPhase.ABORTING) or self.cut_short_by is not None:
            return
        self.cut_short_by = why
        log.warn("{why} while stopping: {jobs} job(s) aborted at once", why=why, jobs=len(self._left))
        self._finish_wait()

    def finish(self) -> None:
        """
        The drain is over: every job has ended or been given up on.
        """
        self._finish_wait()
        self.phase = DrainPhase.DRAINED

    # The waits.

    def _unfinished(self) -> list[Job]:
        return [job for job in self._jobs if not job.state.finished]

    def _start_wait(self, jobs: list[Job]) -> None:
        self._left = set()
        self._wait = Deferred()
        for job in jobs:
            self._left.add(job)
            job.wait().addBoth(self._ended, job)
        if not self._left:
            self._finish_wait()

    def _current_wait(self) -> Deferred[None]:
        """
        A Deferred of its own for whoever waits for the current wait.
        """
        if self._wait is None or self._wait.called:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._wait.addBoth(lambda _: d.callback(None))
        return d

    def _ended(self, _: object, job: Job) -> None:
        self._left.discard(job)
        if not self._left:
            self._finish_wait()

    def _time_is_up(self) -> None:
        self._deadline_call = None
        if self.phase is DrainPhase.DRAINING:
            log.info("The drain's time is up: {jobs} job(s) still running", jobs=len(self._left))
            self._finish_wait()

    def _finish_wait(self) -> None:
        self._left = set()
        wait, self._wait = self._wait, None
        if wait is not None and not wait.called:
            wait.callback(None)
