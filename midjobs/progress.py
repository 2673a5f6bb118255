"""
Throttled progress reports, for jobs that report far more often than anyone can watch.

L{Throttle} is the rule both reporters here follow: the first report goes
out at once, later ones at most once per interval, the newest held back
until the interval ends.  L{JobProgressBuffer} applies it to a job's own
reports; L{midjobs.transfer_progress.TransferProgress} to the bytes a
transfer moves.

A job's C{progress.extra} may carry the standard transfer fields
(L{TRANSFER_KEYS}) beside the job's own keys; L{merge_extra} is how the two
meet without either wiping out the other.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from twisted.python.threadable import isInIOThread

from .job import TRANSFER_KEYS, Job, keep_transfer_keys

__all__ = ["JobProgressBuffer", "TRANSFER_KEYS", "Throttle", "keep_transfer_keys", "merge_extra"]



def merge_extra(current: Any, update: dict[str, Any], owned: tuple[str, ...] = ()) -> Any:
    """
    C{progress.extra} with C{update}'s keys set in it, the other keys kept.

    @param current: the extra in force: L{None}, a dict, or any other JSON
        value a job chose (then it is the job's alone: returned unchanged).
    @param update: the keys to set.
    @param owned: keys the updater owns: removed when C{update} lacks them
        (a figure that is no longer known disappears).
    @return: the new extra (a new dict), or C{current} when it is not a dict.
    """
    if current is None:
        merged: dict[str, Any] = {}
    elif isinstance(current, dict):
        merged = {key: value for key, value in current.items() if key not in owned}
    else:
        return current
    merged.update(update)
    return merged


class Throttle:
    """
    Calls C{send} at most once per C{interval} seconds, on the reactor thread.

    L{request} asks for a call: the first goes through at once, a request
    within the interval after a call is served when the interval ends
    (once, however many came).  L{flush} serves a waiting request now.
    L{request} and L{flush} are safe to call from any thread.
    """

    def __init__(self, reactor: Any, send: Callable[[], None], interval: float = 1.0) -> None:
        self._reactor = reactor
        self._send = send
        self._interval = interval
        self._lock = threading.Lock()
        #: A request came and has not been served.
        self._wanted = False
        #: A hop to the reactor thread is on its way (from another thread).
        self._hopping = False
        self._timer: Any = None
        self._last_sent = float("-inf")

    def request(self) -> None:
        """
        Ask for a call of C{send}: now, or when the interval allows.
        """
        with self._lock:
            self._wanted = True
            if isInIOThread():  # type: ignore[no-untyped-call]  # not annotated in Twisted
                hop = False
            elif self._hopping:
                return
            else:
                hop = self._hopping = True
        if hop:
            self._reactor.callFromThread(self._schedule)
        else:
            self._schedule()

    def flush(self) -> None:
        """
        Serve a waiting request now.
        """
        if isInIOThread():  # type: ignore[no-untyped-call]  # not annotated in Twisted
            self._flush()
        else:
            self._reactor.callFromThread(self._flush)

    def cancel(self) -> None:
        """
        Drop a waiting request.
        """
        with self._lock:
            self._wanted = False
        self.flush()

    def _schedule(self) -> None:
        with self._lock:
            self._hopping = False
        if self._timer is not None:
            return
        wait = self._last_sent + self._interval - self._reactor.seconds()
        if wait <= 0:
            self._fire()
        else:
            self._timer = self._reactor.callLater(wait, self._fire)

    def _flush(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._fire()

    def _fire(self) -> None:
        self._timer = None
        with self._lock:
            wanted, self._wanted = self._wanted, False
        if wanted:
            self._last_sent = self._reactor.seconds()
            self._send()


class JobProgressBuffer:
    """
    Passes a job's progress on at most once per C{interval} seconds.

    Use it in place of C{job.set_progress} in a tight loop::

        progress = JobProgressBuffer(job)
        for i, chunk in enumerate(chunks):
            progress.set_progress(100 * i / len(chunks), f"chunk {i}")
        progress.flush()

    The first report goes through at once; later ones within the interval
    are held back, and the newest of them is sent when the interval ends (or
    on L{flush}).  Safe to call from a thread job.

    A dict C{extra} replaces the job's own keys, but the standard transfer
    fields (L{TRANSFER_KEYS}) that an upload or a download keeps in the
    extra stay, unless C{extra} sets them itself (L{keep_transfer_keys}).
    """

    def __init__(self, job: Job, interval: float = 1.0) -> None:
        self._job = job
        self._lock = threading.Lock()
        self._pending: tuple[Any, Any, Any] | None = None
        self._throttle = Throttle(job.reactor, self._send, interval)

    def set_progress(self, percent: float | None = None, description: str | None = None, extra: Any = None) -> None:
        """
        Record a report; send it now or when the interval allows.
        """
        with self._lock:
            self._pending = (percent, description, extra)
        self._throttle.request()

    def _send(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        percent, description, extra = pending
        if isinstance(extra, dict):
            extra = keep_transfer_keys(self._job.progress.get("extra"), extra)
        self._job.set_progress(percent, description, extra)

    def flush(self) -> None:
        """
        Send the held-back report now, from the calling thread (a job's
        report changes it at once): what that thread reports next comes
        after it.
        """
        self._send()
        self._throttle.flush()

    def cancel(self) -> None:
        """
        Drop the held-back report.
        """
        with self._lock:
            self._pending = None
        self._throttle.cancel()
