"""
Job logs that outlive their node: the node that runs a job copies its log
file, as it grows, to the table C{job_log_chunks}, and any node reads it
there (C{core.job_log:<id>}, C{core.job_download_logs}).

L{LogShipper} is the copying half, an L{IJobObserver} of this node's jobs:
every L{INTERVAL} seconds it appends what a running job wrote since its last
look, in chunks of at most L{CHUNK_SIZE} bytes ending between whole UTF-8
characters, one transaction per look; once the job ended, the rest in one
transaction.  After each commit the other nodes hear C{["l", id, size]}
(L{midjobs.cluster.payloads.LogItem}).  At most L{MAX_LOG_BYTES} of a log
are copied; a node that is killed loses the last L{INTERVAL} of its jobs'
logs.
"""

from __future__ import annotations

import codecs
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from ..job import Job
from ..lifecycle import IJobObserver, JobRecord
from ..logs import logger
from ..store.database import Cursor, Pool
from .publisher import JobPublisher

__all__ = [
    "CHUNKS_AT_ONCE",
    "CHUNK_SIZE",
    "INTERVAL",
    "MAX_LOG_BYTES",
    "IJobLogChunks",
    "LogShipper",
    "elsewhere",
    "read_chunks",
]

log = logger(__name__)

#: Seconds between two copies of a running job's new log bytes (as C{core.job_log} looks).
INTERVAL = 0.25

#: Most bytes of one chunk.
CHUNK_SIZE = 64 * 1024

#: How many chunks a reader takes at once (1 MiB).
CHUNKS_AT_ONCE = 16

#: Most bytes read from one log at one look.
_READ_SIZE = 16 * CHUNK_SIZE

#: Most bytes of one job's log copied to the database.
MAX_LOG_BYTES = 64 * 1024 * 1024

#: The chunk that ends a log cut at L{MAX_LOG_BYTES}.
TRUNCATED = b"\n[The log is longer: only its first 64 MiB are kept in the cluster's database]\n"


class IJobLogChunks(Interface):
    """
    The logs of the jobs of every node, as the cluster's database keeps them.
    """

    def log_chunks(job_id: int, after: int, limit: int = ...) -> Any:
        """
        A Deferred firing with the chunks of job C{job_id}'s log numbered
        above C{after}, in order, at most C{limit} of them (L{CHUNKS_AT_ONCE}
        by default): a list of C{(number, bytes)}.
        """

    def follow_log(job_id: int, grew: Any) -> Any:
        """
        Call C{grew(size, final)} each time more of job C{job_id}'s log is
        in the database (C{final}: all of it, the job ended); return a
        function that stops it.
        """


def elsewhere(cluster: Any, record: JobRecord) -> Any:
    """
    Where the log of the job of C{record} is read if another node runs (or
    ran) it: C{cluster} (an L{midjobs.interfaces.ICluster}) if it provides
    L{IJobLogChunks}; else C{None}, the log is in this node's files.
    """
    if record.get("node") in (None, cluster.node) or not IJobLogChunks.providedBy(cluster):
        return None
    return cluster


def read_chunks(txn: Cursor, job_id: int, after: int, limit: int) -> list[tuple[int, bytes]]:
    txn.execute(
        "SELECT seq, data FROM job_log_chunks WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?", (job_id, after, limit)
    )
    return [(int(seq), bytes(data)) for seq, data in txn.fetchall()]


def _whole(data: bytes) -> int:
    """
    How many bytes of C{data} end between whole UTF-8 characters.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(data)
    pending, _ = decoder.getstate()
    return len(data) - len(pending)


def _read(path: str, offset: int, limit: int, to_end: bool) -> bytes:
    """
    The bytes of C{path} after C{offset}: at most C{limit}, ending at a
    whole character unless C{to_end}.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return b""
    return data if to_end else data[: _whole(data)]


def _insert(txn: Cursor, job_id: int, first: int, chunks: list[bytes]) -> None:
    txn.executemany(
        "INSERT INTO job_log_chunks (job_id, seq, data) VALUES (?, ?, ?)",
        [(job_id, first + i, chunk) for i, chunk in enumerate(chunks)],
    )


@attrs.define(eq=False)
class _Shipping:
    """
    How far one job's log is copied: C{offset} bytes of its file, in C{seq} chunks.
    """

    job: Job
    offset: int = 0
    seq: int = 0
    ended: bool = False
    #: The copy under way, if any.
    busy: Deferred[None] | None = None


@implementer(IJobObserver)
class LogShipper:
    """
    Copies the logs of this node's jobs to the database (see the module).
    """

    def __init__(self, reactor: Any, db: Pool, publisher: JobPublisher, interval: float = INTERVAL) -> None:
        """
        @param reactor: provides C{IReactorTime} and C{IReactorThreads}
            (the files are read in its thread pool).
        """
        self._reactor = reactor
        self._db = db
        self._publisher = publisher
        self._shipping: dict[int, _Shipping] = {}
        self._loop = LoopingCall(self._look)
        self._loop.clock = reactor
        self._interval = interval

    # IJobObserver

    def listening(self) -> bool:
        return False

    def added(self, job: Job, record: JobRecord | None) -> None:
        pass

    def changed(self, job: Job, record: JobRecord | None) -> None:
        if job.logs_path is None or job.id in self._shipping or job.state.finished:
            return
        self._shipping[job.id] = _Shipping(job)
        if not self._loop.running:
            self._loop.start(self._interval, now=False).addErrback(self._failed)

    def ended(self, job: Job, record: JobRecord) -> None:
        if not record.get("logs_path"):
            return
        shipping = self._shipping.setdefault(job.id, _Shipping(job))
        shipping.ended = True
        self._ship(shipping)

    def stop(self) -> Deferred[None]:
        """
        Copy nothing more once the copies under way are done.
        """
        if self._loop.running:
            self._loop.stop()
        busy = [s.busy for s in self._shipping.values() if s.busy is not None]
        self._shipping.clear()
        return DeferredList(busy).addCallback(lambda _: None)

    # Copying.

    def _failed(self, failure: Failure) -> None:
        log.failure("Copying job logs to the database failed", failure)

    def _look(self) -> None:
        for shipping in list(self._shipping.values()):
            if shipping.busy is None:
                self._ship(shipping)

    def _ship(self, shipping: _Shipping) -> None:
        """
        Copy what the job wrote since the last copy (after the copy under way).
        """
        if shipping.busy is not None:
            shipping.busy.addCallback(lambda _: self._ship(shipping))
            return
        done = Deferred.fromCoroutine(self._copy(shipping))
        shipping.busy = done

        def settled(result: object) -> object:
            shipping.busy = None
            if shipping.ended and self._shipping.get(shipping.job.id) is shipping:
                del self._shipping[shipping.job.id]
                if not self._shipping and self._loop.running:
                    self._loop.stop()
            return result

        done.addBoth(settled).addErrback(self._failed)

    async def _copy(self, shipping: _Shipping) -> None:
        path = shipping.job.logs_path
        room = MAX_LOG_BYTES - shipping.offset
        if path is None or (room <= 0 and not shipping.ended):
            return
        # The end: the rest at once (and a byte more, to see if it is cut); else a look's worth.
        limit = room + 1 if shipping.ended else min(room, _READ_SIZE)
        data: bytes = await deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), _read, path, shipping.offset, limit, shipping.ended
        )
        truncated = len(data) > room
        data = data[:room]
        chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
        if truncated:
            chunks.append(TRUNCATED)
        if chunks:
            await self._db.runInteraction(_insert, shipping.job.id, shipping.seq + 1, chunks)
            shipping.offset += len(data)
            shipping.seq += len(chunks)
        if chunks or shipping.ended:
            # The end is told even with nothing new: the followers stop there.
            self._publisher.log_grew(shipping.job.id, shipping.offset, shipping.ended)
