"""
Following one job through its C{core.get_jobs} events until it ends.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._errors import error_from_job
from ._types import FINAL_STATES, JobCallback, JobRecord

__all__ = ["JobWatcher"]


def _change_key(job: JobRecord) -> tuple[object, ...]:
    progress = job.get("progress") or {}
    return (
        job.get("state"),
        progress.get("percent"),
        progress.get("description"),
        job.get("description"),
    )


class JobWatcher:
    """
    Collects the events of one job, whose id is learnt after they may start.

    Events that come before L{started} are buffered per job id; those of the
    job are then replayed and the others dropped.

    @ivar done: fires with the job's result on SUCCESS; fails with
        L{ClientCallError} on FAILED and L{JobAborted} on ABORTED.
    @ivar job: the job's latest record, or L{None}.
    """

    _log = Logger()

    def __init__(self, callback: JobCallback | None = None) -> None:
        self._callback = callback
        self._buffered: dict[object, list[JobRecord]] = {}
        self._last_key: tuple[object, ...] | None = None
        self.job_id: int | None = None
        self.job: JobRecord | None = None
        self.done: Deferred[Any] = Deferred()

    def event(self, msg: str, collection: str, id: Any, fields: dict[str, Any]) -> None:
        """
        One C{core.get_jobs} event (an L{EventCallback}).
        """
        if self.job_id is None:
            self._buffered.setdefault(id, []).append(fields)
        elif id == self.job_id:
            self.update(fields)

    def started(self, job_id: int) -> None:
        """
        The job's id is known: replay what was buffered for it.
        """
        self.job_id = job_id
        buffered, self._buffered = self._buffered.get(job_id, []), {}
        for fields in buffered:
            self.update(fields)

    def update(self, fields: dict[str, Any] | None) -> None:
        """
        Merge a (possibly partial) record of the job and act on it.
        """
        if self.done.called or not isinstance(fields, dict):
            return
        self.job = {**(self.job or {}), **fields}
        key = _change_key(self.job)
        if key != self._last_key:
            self._last_key = key
            if self._callback is not None:
                try:
                    self._callback(self.job)
                except Exception:
                    self._log.failure("job callback failed")
        state = self.job.get("state")
        if state == "SUCCESS":
            self.done.callback(self.job.get("result"))
        elif state in FINAL_STATES:
            self.done.errback(error_from_job(self.job))

    def fail(self, reason: Exception | Failure) -> None:
        """
        Stop waiting: the events stopped coming (an exception or a Failure).
        """
        if not self.done.called:
            self.done.errback(reason)
