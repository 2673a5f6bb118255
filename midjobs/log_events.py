"""
The C{core.job_log:<id>} event: a job's log as it is written.

A subscriber first gets the log so far (its last L{MAX_BACKLOG} bytes, from
a line's start), then each piece written after, every L{INTERVAL} seconds
while the job runs: C{collection_update} notifications with C{msg}
C{"added"}, the job's C{id} and C{fields: {"data": <text>}}.  Whoever may
read the job (L{midjobs.access}) may follow its log, from memory or the job
history alike; a finished job's log comes whole and nothing follows.

The log file is read, not hooked: whatever writes to C{job.logs_fd} (the
job itself, a subprocess it handed the descriptor to) shows up.
"""

from __future__ import annotations

import codecs
import errno
import os
from typing import TYPE_CHECKING, Any, BinaryIO

from twisted.internet.task import LoopingCall

from .errors import CallError
from .job import Job
from .logs import logger

if TYPE_CHECKING:
    from .middleware import Middleware

__all__ = ["EVENT", "INTERVAL", "MAX_BACKLOG", "JobLogEvents"]

log = logger(__name__)

EVENT = "core.job_log"

#: Seconds between two looks at a running job's log.
INTERVAL = 0.25

#: Most bytes of a log a new subscriber gets of what came before.
MAX_BACKLOG = 1024 * 1024

#: Most bytes read from one log at one look.
_READ_SIZE = 1024 * 1024


def _job_id(name: str) -> int:
    _, _, argument = name.partition(":")
    try:
        job_id = int(argument)
    except ValueError:
        raise CallError(f"{EVENT} needs a job id: {EVENT}:<id>", errno.EINVAL) from None
    if job_id < 1:
        raise CallError(f"{EVENT} needs a job id: {EVENT}:<id>", errno.EINVAL)
    return job_id


class _Follower:
    """
    Reads one job's log from where it last stopped and tells the subscribers.

    C{offset} only ever ends between whole UTF-8 characters, so the text up
    to it (a new subscriber's backlog) never ends in half a character.
    """

    def __init__(self, events: Any, name: str, job_id: int, path: str | None) -> None:
        self.events = events
        self.name = name
        self.job_id = job_id
        self.path = path
        self.offset = 0
        self._file: BinaryIO | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.loop: LoopingCall | None = None

    def start_at_end(self) -> None:
        """
        Begin after what the log holds now: a new subscriber gets that as
        its L{backlog}, and what is written next goes to all.
        """
        if self.path is None:
            return
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as f:
                f.seek(max(0, size - 4))
                tail = f.read()
        except FileNotFoundError:
            return
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        decoder.decode(tail)
        pending, _ = decoder.getstate()
        self.offset = size - len(pending)

    def backlog(self) -> str:
        """
        The text before L{offset}: its last L{MAX_BACKLOG} bytes, from a line's start.
        """
        if self.path is None or self.offset == 0:
            return ""
        start = max(0, self.offset - MAX_BACKLOG)
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(self.offset - start)
        if start:
            data = data[data.find(b"\n") + 1 :]
        return data.decode("utf-8", "replace")

    def catch_up(self) -> bool:
        """
        Send what was written since the last look (at most L{_READ_SIZE}
        bytes of it) to every subscriber; whether there was anything.
        """
        if self.path is None:
            return False
        if self._file is None:
            try:
                self._file = open(self.path, "rb")
            except FileNotFoundError:
                return False
        self._file.seek(self.offset)
        data = self._file.read(_READ_SIZE)
        text = self._decoder.decode(data)
        pending, _ = self._decoder.getstate()
        self._decoder.reset()
        self.offset += len(data) - len(pending)
        if text:
            self.events.send(self.name, "added", self.job_id, {"data": text})
        return bool(text)

    def close(self) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        if self._file is not None:
            self._file.close()
            self._file = None


class JobLogEvents:
    """
    Offers C{core.job_log:<id>} on a middleware's event hub.
    """

    def __init__(self, middleware: Middleware, interval: float = INTERVAL) -> None:
        self.middleware = middleware
        self.interval = interval
        self._followers: dict[int, _Follower] = {}

    def register(self) -> None:
        self.middleware.events.register(
            EVENT,
            "A job's log as it is written: core.job_log:<id>.",
            may_see=self._may_see,
            prepare=self._prepare,
            subscribed=self._subscribed,
        )

    def stop(self) -> None:
        for follower in self._followers.values():
            follower.close()
        self._followers.clear()

    def _live_job(self, job_id: int) -> Job | None:
        try:
            return self.middleware.jobs.get(job_id)
        except CallError:
            return None

    def _may_see(self, user: Any, name: str, fields: Any) -> bool:
        job = self._live_job(_job_id(name))
        return job is not None and self.middleware.may_see_job(user, job)

    async def _prepare(self, session: Any, name: str) -> None:
        job_id = _job_id(name)
        record = await self.middleware.call(
            "core.get_jobs",
            [["id", "=", job_id]],
            {"get": True, "select": ["id", "method", "credentials", "logs_path", "state"]},
        )
        self.middleware.check_job_access(session, record)
        job = self._live_job(job_id)
        has_logs = job.options.logs if job is not None else bool(record.get("logs_path"))
        if not has_logs:
            raise CallError(f"Job {job_id} has no logs", errno.ENOENT)

    def _subscribed(self, subscriber: Any, name: str) -> None:
        job_id = _job_id(name)
        follower = self._followers.get(job_id)
        if follower is None:
            follower = self._follow(name, job_id)
        backlog = follower.backlog()
        if backlog:
            self.middleware.events.send_to(subscriber, name, "added", job_id, {"data": backlog})
        follower.catch_up()
        if follower.loop is None:
            # A finished job's log is all there: nothing more follows.
            follower.close()
            self._followers.pop(job_id, None)

    def _follow(self, name: str, job_id: int) -> _Follower:
        job = self._live_job(job_id)
        path = job.logs_path if job is not None else str(self.middleware.logs_dir / f"{job_id}.log")
        follower = _Follower(self.middleware.events, name, job_id, path)
        follower.start_at_end()
        self._followers[job_id] = follower
        if job is not None and not job.state.finished:
            follower.loop = LoopingCall(self._look, follower, job)
            follower.loop.clock = self.middleware.reactor
            follower.loop.start(self.interval, now=False).addErrback(
                lambda failure: log.failure("Following the log of job {job_id} failed", failure, job_id=job_id)
            )
            job.wait().addBoth(self._job_ended, follower, job)
        return follower

    def _look(self, follower: _Follower, job: Job) -> None:
        if follower.path is None:
            follower.path = job.logs_path
        if not self.middleware.events.has_subscribers(follower.name):
            self._drop(follower)
            return
        follower.catch_up()

    def _job_ended(self, result: object, follower: _Follower, job: Job) -> None:
        if self._followers.get(follower.job_id) is follower:
            if follower.path is None:
                follower.path = job.logs_path
            while follower.catch_up():
                pass
            self._drop(follower)

    def _drop(self, follower: _Follower) -> None:
        follower.close()
        if self._followers.get(follower.job_id) is follower:
            del self._followers[follower.job_id]
