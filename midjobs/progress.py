"""
Throttled progress reports, for jobs that report far more often than anyone can watch.
"""

from __future__ import annotations

import threading
from typing import Any

from .job import Job

__all__ = ["JobProgressBuffer"]


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
    """

    def __init__(self, job: Job, interval: float = 1.0) -> None:
        self._job = job
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: tuple[Any, Any, Any] | None = None
        self._timer: Any = None
        self._last_sent = float("-inf")

    def set_progress(self, percent: float | None = None, description: str | None = None, extra: Any = None) -> None:
        """
        Record a report; send it now or when the interval allows.
        """
        with self._lock:
            self._pending = (percent, description, extra)
        self._job.reactor.callFromThread(self._schedule)

    def _schedule(self) -> None:
        if self._timer is not None:
            return
        reactor = self._job.reactor
        wait = self._last_sent + self._interval - reactor.seconds()
        if wait <= 0:
            self._send()
        else:
            self._timer = reactor.callLater(wait, self._send)

    def _send(self) -> None:
        self._timer = None
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._last_sent = self._job.reactor.seconds()
            self._job.set_progress(*pending)

    def flush(self) -> None:
        """
        Send the held-back report now.
        """
        self._job.reactor.callFromThread(self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._send()

    def cancel(self) -> None:
        """
        Drop the held-back report.
        """
        with self._lock:
            self._pending = None
        self._job.reactor.callFromThread(self._flush)
