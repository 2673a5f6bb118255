"""
Rate and time left of a job that moves bytes, in its C{progress.extra}.

Every side of a transfer that sees bytes move reports how far it is with
L{TransferProgress.moved}: an upload (the bytes of the file parts handed to
the job's input pipes), a download (the bytes sent to the client), the
C{filesystem} jobs (the bytes written to or read from the file).  They count
the same stream, so the position shown is the furthest any of them reported;
each job has one L{TransferProgress} (L{transfer_progress}) that they share.

The job's C{progress.extra} then carries (L{midjobs.progress.TRANSFER_KEYS}):

  - C{bytes}: the position, an int;
  - C{total_bytes}: the size of the whole transfer, when someone knows it
    (L{TransferProgress.expect}); never less than C{bytes};
  - C{rate}: bytes per second, an int: an exponential moving average with a
    time constant of L{RATE_WINDOW} seconds (corrected for its start at 0,
    so a burst at the start, such as buffers filling, weighs only for the
    time it took), once the transfer has moved for half an update interval;
  - C{eta_seconds}: seconds left at that rate (one decimal), when the total
    is known; 0 once C{bytes} reached it.

The fields are merged into the extra in force: a job's own keys stay
(L{midjobs.progress.merge_extra}); an extra that is not a dict is the job's
alone and left as it is.  Updates go out as C{JobProgressBuffer}'s do: the
first at once, then at most one per L{UPDATE_INTERVAL}; and when the bytes
stop moving for L{RATE_WINDOW} seconds, one more shows the rate falling.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from twisted.python.threadable import isInIOThread

from .job import Job
from .progress import TRANSFER_KEYS, Throttle, merge_extra

__all__ = ["RATE_WINDOW", "TransferProgress", "UPDATE_INTERVAL", "transfer_progress"]

#: Seconds between two updates of a transfer's figures, at most one per interval.
UPDATE_INTERVAL = 1.0
#: The time constant of the rate's moving average, in seconds; also how long
#: the bytes must stand still before an update shows the rate falling.
RATE_WINDOW = 5.0


class TransferProgress:
    """
    The standard transfer fields of one job's progress.

    L{moved} and L{expect} may be called from any thread; the figures are
    computed and sent on the reactor thread.

    @ivar position: the furthest position reported, in bytes.
    @ivar total: the expected size in bytes, or L{None}.
    @ivar rate: the smoothed rate in bytes per second, or L{None} before
        there is one.
    """

    def __init__(self, job: Job, interval: float | None = None, window: float = RATE_WINDOW) -> None:
        self._job = job
        self._reactor = job.reactor
        self._interval = UPDATE_INTERVAL if interval is None else interval
        self._window = window
        self._lock = threading.Lock()
        self.position = 0
        self.total: int | None = None
        self.rate: float | None = None
        #: When and where the rate was last sampled (None until the first report).
        self._sampled: tuple[float, int] | None = None
        #: The moving average started from 0, and the weight it has gathered:
        #: their ratio is the rate without the bias of that start (in the
        #: first window, close to the plain average since the first report).
        self._average = 0.0
        self._weights = 0.0
        self._stall_call: Any = None
        self._over = False
        self._throttle = Throttle(self._reactor, self._send, self._interval)

    def watch_job(self) -> None:
        """
        Stop at the job's end (its figures no longer change then).
        """
        if isInIOThread():  # type: ignore[no-untyped-call]  # not annotated in Twisted
            self._watch_job()
        else:
            self._reactor.callFromThread(self._watch_job)

    def moved(self, position: int) -> None:
        """
        This side of the transfer has moved C{position} bytes in all.
        """
        with self._lock:
            if position <= self.position:
                return
            self.position = position
        self._throttle.request()

    def expect(self, total: int | None) -> None:
        """
        The whole transfer is C{total} bytes (L{None}: not known).
        """
        with self._lock:
            if total == self.total:
                return
            self.total = total
        self._throttle.request()

    def finish(self) -> None:
        """
        This side is done: send the figures now.
        """
        self._throttle.flush()

    def figures(self) -> dict[str, Any]:
        """
        The transfer fields as they stand (without sampling the rate).
        """
        with self._lock:
            position, total = self.position, self.total
        fields: dict[str, Any] = {"bytes": position}
        if total is not None:
            fields["total_bytes"] = max(total, position)
        if self.rate is not None:
            fields["rate"] = round(self.rate)
        if total is not None:
            if position >= total:
                fields["eta_seconds"] = 0
            elif self.rate:
                fields["eta_seconds"] = round((total - position) / self.rate, 1)
        return fields

    # -- on the reactor thread ---------------------------------------------------

    def _watch_job(self) -> None:
        self._job.wait().addBoth(self._job_ended)

    def _job_ended(self, result: object) -> object:
        self._over = True
        with _registry_lock:
            if _registry.get(self._job) is self:
                del _registry[self._job]
        self._throttle.cancel()
        self._stop_stall_timer()
        return result

    def _sample(self) -> None:
        """
        Fold the movement since the last sample into the moving average.
        """
        now = self._reactor.seconds()
        with self._lock:
            position = self.position
        if self._sampled is None:
            self._sampled = (now, position)
            return
        then, before = self._sampled
        elapsed = now - then
        if elapsed <= 0 or (self.rate is None and elapsed < self._interval / 2):
            return
        weight = 1 - math.exp(-elapsed / self._window)
        self._average += weight * ((position - before) / elapsed - self._average)
        self._weights += weight * (1 - self._weights)
        self.rate = self._average / self._weights
        self._sampled = (now, position)

    def _send(self) -> None:
        if self._over:
            return
        self._sample()
        self._publish()
        self._arm_stall_timer()

    def _publish(self) -> None:
        job = self._job
        extra = merge_extra(job.progress.get("extra"), self.figures(), TRANSFER_KEYS)
        job.set_progress(extra=extra)

    def _arm_stall_timer(self) -> None:
        self._stop_stall_timer()
        with self._lock:
            done = self.total is not None and self.position >= self.total
        if not done:
            self._stall_call = self._reactor.callLater(self._window, self._stalled)

    def _stop_stall_timer(self) -> None:
        if self._stall_call is not None and self._stall_call.active():
            self._stall_call.cancel()
        self._stall_call = None

    def _stalled(self) -> None:
        """
        Nothing moved for a whole window: show the rate falling.
        """
        self._stall_call = None
        self._send()


#: The transfers of the jobs that have not ended (each is dropped at its job's end).
_registry: dict[Job, TransferProgress] = {}
_registry_lock = threading.Lock()


def transfer_progress(job: Job) -> TransferProgress:
    """
    The L{TransferProgress} of C{job}, made at the first call: every side of
    the job's transfer reports to the same one.  Safe from any thread.
    """
    with _registry_lock:
        progress = _registry.get(job)
        if progress is not None:
            return progress
        progress = _registry[job] = TransferProgress(job)
    progress.watch_job()
    return progress
