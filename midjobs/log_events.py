"""
The C{core.job_log:<id>} event: a job's log as it is written.

A subscriber first gets the log so far (its last L{MAX_BACKLOG} bytes, from
a line's start), then each piece written after, every L{INTERVAL} seconds
while the job runs: C{collection_update} notifications with C{msg}
C{"added"}, the job's C{id} and C{fields: {"data": <text>}}.  Whoever may
read the job (L{midjobs.access}) may follow its log, from memory or the job
history alike; a finished job's log comes whole and nothing follows.

The log file is read, not hooked: whatever writes to C{job.logs_fd} (the
job itself, a subprocess it handed the descriptor to) shows up.  The log of
a job of another node of a cluster is read from the database, where that
node copies it (L{midjobs.cluster.logs}), as that node tells it grew.
"""

from __future__ import annotations

import codecs
from enum import Enum, auto
import errno
import os
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool

from zope.interface import implementer

from .cluster.logs import elsewhere
from .errors import CallError
from .job import Job
from .lifecycle import IJobObserver, JobRecord, JobState
from .log_files import log_file
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

_T = TypeVar("_T")

#: Runs a blocking function off the reactor thread: C{await in_thread(f, *args)}.
InThread = Callable[..., "Deferred[Any]"]


def _job_id(name: str) -> int:
    _, _, argument = name.partition(":")
    try:
        job_id = int(argument)
    except ValueError:
        raise CallError(f"{EVENT} needs a job id: {EVENT}:<id>", errno.EINVAL) from None
    if job_id < 1:
        raise CallError(f"{EVENT} needs a job id: {EVENT}:<id>", errno.EINVAL)
    return job_id


# What a follower reads, in the reactor's thread pool: plain functions of a path.


def _pending_bytes(data: bytes) -> int:
    """
    How many bytes at the end of C{data} are the start of a UTF-8 character
    that is not whole yet.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(data)
    pending, _ = decoder.getstate()
    return len(pending)


def _end_offset(path: str) -> int:
    """
    Where the log at C{path} ends now, at a whole character (0 if there is none yet).
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 4))
            return size - _pending_bytes(f.read())
    except FileNotFoundError:
        return 0


def _read_backlog(path: str, end: int) -> str:
    """
    The text before C{end}: its last L{MAX_BACKLOG} bytes, from a line's start.
    """
    if end == 0:
        return ""
    start = max(0, end - MAX_BACKLOG)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    if start:
        data = data[data.find(b"\n") + 1 :]
    return data.decode("utf-8", "replace")


def _read_from(path: str, offset: int) -> tuple[str, int]:
    """
    What was written after C{offset}, at most L{_READ_SIZE} bytes: its
    text (whole characters) and the bytes that text takes.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(_READ_SIZE)
    except FileNotFoundError:
        return "", 0
    used = len(data) - _pending_bytes(data)
    return data[:used].decode("utf-8", "replace"), used


class _FollowerState(Enum):
    """
    Where a L{_Follower} is.
    """

    #: Reading, sending.
    FOLLOWING = auto()
    #: The job ended and its log was read to the end: a new subscriber
    #: still gets it whole, nothing more is sent to all.
    ENDED = auto()
    #: Nobody follows any more (or the daemon stops): reads that end are dropped.
    CLOSED = auto()


class _Follower:
    """
    Reads one job's log from where it last stopped and tells the subscribers.

    Every read runs in the reactor's thread pool, one at a time (L{_lock}),
    in bounded pieces (L{MAX_BACKLOG}, L{_READ_SIZE}).  C{offset} only ever
    ends between whole UTF-8 characters, so the text up to it (a new
    subscriber's backlog) never ends in half a character.

    A new subscriber gets the text before C{offset}, then what everyone
    gets: who subscribes while a read is under way is sent its backlog
    before that read's text goes out, so nobody sees a piece twice, or
    out of order.
    """

    def __init__(self, events: Any, name: str, job_id: int, path: str | None, in_thread: InThread) -> None:
        self.events = events
        self.name = name
        self.job_id = job_id
        self.path = path
        self.offset = 0
        self.state = _FollowerState.FOLLOWING
        self.loop: LoopingCall | None = None
        self._in_thread = in_thread
        self._lock = DeferredLock()
        self._newcomers: list[Any] = []

    def run(self, work: Callable[[], Any]) -> Deferred[Any]:
        """
        Run C{work} (a coroutine function) after the follower's other work.
        """
        return self._lock.run(lambda: Deferred.fromCoroutine(work()))

    async def start_at_end(self) -> None:
        """
        Begin after what the log holds now: a new subscriber gets that as
        its backlog, and what is written next goes to all.
        """
        if self.path is not None:
            self.offset = await self._in_thread(_end_offset, self.path)

    def welcome(self, subscriber: Any) -> Deferred[Any]:
        """
        Send C{subscriber} the log so far, before anything that follows.
        """
        self._newcomers.append(subscriber)
        return self.run(self._serve_newcomers)

    def _closed(self) -> bool:
        return self.state is _FollowerState.CLOSED

    async def _serve_newcomers(self) -> None:
        while self._newcomers and self.path is not None and not self._closed():
            newcomers, self._newcomers = self._newcomers, []
            backlog = await self._in_thread(_read_backlog, self.path, self.offset)
            # Closed while it was read?
            if self._closed() or not backlog:
                continue
            for subscriber in newcomers:
                self.events.send_to(subscriber, self.name, "added", self.job_id, {"data": backlog})
        self._newcomers.clear()

    async def catch_up(self) -> bool:
        """
        Send what was written since the last look (at most L{_READ_SIZE}
        bytes of it) to every subscriber; whether there was anything.
        """
        if self.path is None or self.state is not _FollowerState.FOLLOWING:
            return False
        text, used = await self._in_thread(_read_from, self.path, self.offset)
        # Who came during the read gets what was before it first.
        await self._serve_newcomers()
        if self.state is not _FollowerState.FOLLOWING:
            return False
        self.offset += used
        if text:
            self.events.send(self.name, "added", self.job_id, {"data": text})
        return bool(text)

    async def catch_up_all(self) -> None:
        """
        Send the rest of an ended job's log; then only newcomers get it.
        """
        while await self.catch_up():
            pass
        if self.state is _FollowerState.FOLLOWING:
            self.state = _FollowerState.ENDED

    def stop_loop(self) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()

    def close(self) -> None:
        self.state = _FollowerState.CLOSED
        self._newcomers.clear()
        self.stop_loop()


def _backlog(data: bytes) -> str:
    """
    The text of a log's last L{MAX_BACKLOG} bytes C{data}, from a line's start.
    """
    if len(data) > MAX_BACKLOG:
        data = data[-MAX_BACKLOG:]
        data = data[data.find(b"\n") + 1 :]
    return data.decode("utf-8", "replace")


class _RemoteFollower:
    """
    Follows the log of a job of another node in the cluster's database
    (L{IJobLogChunks}): a new subscriber gets what came so far, then each
    piece as the node tells that it is there.  Reads run one at a time
    (L{_lock}), so nobody sees a piece twice or out of order.
    """

    def __init__(self, events: Any, name: str, job_id: int, chunks: Any, done: Callable[[], None]) -> None:
        self.events = events
        self.name = name
        self.job_id = job_id
        self._chunks = chunks
        self._done = done
        #: The last chunk read.
        self.seq = 0
        #: The end of what was read (its last L{MAX_BACKLOG} bytes), for newcomers.
        self.tail = b""
        self._lock = DeferredLock()
        self._unfollow = chunks.follow_log(job_id, self._grew)

    async def _read(self) -> bytes:
        """
        What came since the last read (at most L{MAX_BACKLOG} bytes of it).
        """
        pieces: list[bytes] = []
        while True:
            chunks = await self._chunks.log_chunks(self.job_id, self.seq)
            if not chunks:
                break
            self.seq = chunks[-1][0]
            pieces.append(b"".join(chunk for _, chunk in chunks))
            self.tail = (self.tail + pieces[-1])[-MAX_BACKLOG:]
            if sum(map(len, pieces)) > MAX_BACKLOG:
                pieces = [self.tail]
        return b"".join(pieces)

    def welcome(self, subscriber: Any) -> Deferred[None]:
        async def welcome() -> None:
            await self._read()
            if self.tail:
                self.events.send_to(subscriber, self.name, "added", self.job_id, {"data": _backlog(self.tail)})

        return self._lock.run(lambda: Deferred.fromCoroutine(welcome()))

    def _grew(self, size: int, final: bool) -> None:
        if not self.events.has_subscribers(self.name):
            self.close()
            return

        async def catch_up() -> None:
            data = await self._read()
            if data:
                self.events.send(self.name, "added", self.job_id, {"data": data.decode("utf-8", "replace")})
            if final:
                self.close()

        self._lock.run(lambda: Deferred.fromCoroutine(catch_up())).addErrback(
            lambda f: log.failure("Following the log of job {job_id} failed", f, job_id=self.job_id)
        )

    def close(self) -> None:
        self._unfollow()
        self._done()


@implementer(IJobObserver)
class JobLogEvents:
    """
    Offers C{core.job_log:<id>} on a middleware's event hub.  An observer of
    its jobs while it follows a running one: a followed job's end sends the
    rest of its log.
    """

    def __init__(self, middleware: Middleware, interval: float = INTERVAL) -> None:
        self.middleware = middleware
        self.interval = interval
        self._followers: dict[int, _Follower] = {}
        #: The followers of the logs of other nodes' running jobs, and their records.
        self._remote: dict[int, tuple[_RemoteFollower | None, Any]] = {}

    def register(self) -> None:
        self.middleware.events.register(
            EVENT,
            "A job's log as it is written: core.job_log:<id>.",
            may_see=self._may_see,
            prepare=self._prepare,
            subscribed=self._subscribed,
        )

    # IJobObserver

    def listening(self) -> bool:
        return False

    def added(self, job: Job, record: JobRecord | None) -> None:
        pass

    def changed(self, job: Job, record: JobRecord | None) -> None:
        pass

    def ended(self, job: Job, record: JobRecord) -> None:
        self._follower_ended(job)

    def _follower_ended(self, job: Job) -> None:
        follower = self._followers.get(job.id)
        if follower is not None:
            self._job_ended(follower, job)

    def stop(self) -> None:
        for remote, _ in list(self._remote.values()):
            if remote is not None:
                remote.close()
        for follower in self._followers.values():
            follower.close()
        if self._followers:
            self._followers.clear()
            self.middleware.jobs.unobserve(self)

    def _live_job(self, job_id: int) -> Job | None:
        try:
            return self.middleware.jobs.get(job_id)
        except CallError:
            return None

    def _may_see(self, user: Any, name: str, fields: Any) -> bool:
        job_id = _job_id(name)
        job: Any = self._live_job(job_id)
        if job is None and job_id in self._remote:
            job = self._remote[job_id][1]
        return job is not None and self.middleware.may_see_job(user, job)

    def _chunks(self, record: Any) -> Any:
        return elsewhere(self.middleware.cluster, record)

    async def _prepare(self, session: Any, name: str) -> None:
        job_id = _job_id(name)
        record = await self.middleware.call(
            "core.get_jobs",
            [["id", "=", job_id]],
            {"get": True, "select": ["id", "method", "credentials", "logs_path", "state", "node"]},
        )
        self.middleware.check_job_access(session, record)
        job = self._live_job(job_id)
        has_logs = job.options.logs if job is not None else bool(record.get("logs_path"))
        if not has_logs:
            raise CallError(f"Job {job_id} has no logs", errno.ENOENT)
        if job is None and self._chunks(record) is not None and job_id not in self._remote:
            # Its follower starts once subscribed (L{_subscribed}).
            self._remote[job_id] = (None, record)

    def _in_thread(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        reactor = self.middleware.reactor
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    def _subscribed(self, subscriber: Any, name: str) -> None:
        job_id = _job_id(name)
        if job_id in self._remote:
            self._subscribed_elsewhere(subscriber, name, job_id)
            return
        follower = self._followers.get(job_id)
        if follower is None:
            follower = self._follow(name, job_id)
        follower.welcome(subscriber).addErrback(self._failed, job_id)
        if follower.loop is None:
            # A finished job's log is all there: nothing more follows.
            follower.run(follower.catch_up_all).addErrback(self._failed, job_id)

    def _subscribed_elsewhere(self, subscriber: Any, name: str, job_id: int) -> None:
        remote, record = self._remote[job_id]
        if remote is None:
            chunks = self._chunks(record)

            def done() -> None:
                self._remote.pop(job_id, None)

            remote = _RemoteFollower(self.middleware.events, name, job_id, chunks, done)
            self._remote[job_id] = (remote, record)
        follower = remote
        follower.welcome(subscriber).addCallback(
            lambda _: follower.close() if JobState(record["state"]).finished else None
        ).addErrback(self._failed, job_id)

    def _failed(self, failure: Any, job_id: int) -> None:
        log.failure("Following the log of job {job_id} failed", failure, job_id=job_id)

    def _follow(self, name: str, job_id: int) -> _Follower:
        job = self._live_job(job_id)
        path = job.logs_path if job is not None else str(log_file(self.middleware.logs_dir, job_id))
        follower = _Follower(self.middleware.events, name, job_id, path, self._in_thread)
        follower.run(follower.start_at_end).addErrback(self._failed, job_id)
        if job is not None and not job.state.finished:
            # A running job's follower is shared; a finished one's serves one subscriber.
            if not self._followers:
                # An observer of the jobs only while it follows one.
                self.middleware.jobs.observe(self)
            self._followers[job_id] = follower
            follower.loop = LoopingCall(self._look, follower, job)
            follower.loop.clock = self.middleware.reactor
            follower.loop.start(self.interval, now=False).addErrback(self._failed, job_id)
            if job.options.transient:
                # The queue tells its observers nothing of a transient job: wait for its end.
                job.wait().addBoth(lambda _: self._follower_ended(job))
        return follower

    def _look(self, follower: _Follower, job: Job) -> Deferred[Any] | None:
        if follower.path is None:
            follower.path = job.logs_path
        if not self.middleware.events.has_subscribers(follower.name):
            self._drop(follower)
            return None
        # The loop waits for the look to end before it counts to the next.
        return follower.run(follower.catch_up)

    def _job_ended(self, follower: _Follower, job: Job) -> None:
        if follower.path is None:
            follower.path = job.logs_path
        follower.stop_loop()
        # Who subscribes while the rest is read gets the whole log from
        # this follower; who comes after, from a follower of its own.
        follower.run(follower.catch_up_all).addBoth(lambda _: self._forget(follower)).addErrback(
            self._failed, follower.job_id
        )

    def _forget(self, follower: _Follower) -> None:
        if self._followers.get(follower.job_id) is follower:
            del self._followers[follower.job_id]
            if not self._followers:
                self.middleware.jobs.unobserve(self)

    def _drop(self, follower: _Follower) -> None:
        follower.close()
        self._forget(follower)
