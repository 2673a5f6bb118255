"""
The sending half of a cluster's job events: an L{IJobObserver} that tells
the other nodes, through C{pg_notify}, of each job of this node.

A job's creation and end are durable when an observer hears of them, so a
notification sent then keeps the rule "durable before told" on every node.
What one job reports between two sends is coalesced (the newest record
wins; an addition stays an addition), and the sends are made when the
reactor has handled the events at hand, at most one every L{FLUSH_INTERVAL}
seconds, one transaction each, one at a time and in order.
"""

from __future__ import annotations

import functools
import time

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from ..job import Job
from ..lifecycle import IJobObserver, JobRecord
from ..logs import logger
from ..store.database import Cursor, Pool
from .payloads import JOBS_CHANNEL, Item, ItemKind, JobItem, LogItem, pack

__all__ = ["FLUSH_INTERVAL", "RETRY_DELAY", "JobPublisher"]

log = logger(__name__)

#: The shortest time between two sends, in seconds.
FLUSH_INTERVAL = 0.01

#: The most payloads one statement sends (a statement takes up to 65535 parameters).
_MAX_PAYLOADS = 1000

#: How long a send that failed (the database is away) waits to be tried again.
RETRY_DELAY = 1.0


@attrs.define
class _Pending:
    """
    What is to be told of one job at the next send.

    @ivar job: the job, whose newest record is read at the send (C{None}
        for a job of another node, reaped here).
    @ivar added: its addition has not been told.
    @ivar end: its final record, once it ended.
    @ivar log_size: its log's size in the store, if it grew.
    @ivar log_final: that log is whole.
    """

    job: Job | None
    added: bool = False
    changed: bool = False
    end: JobRecord | None = None
    log_size: int | None = None
    log_final: bool = False


@functools.lru_cache(maxsize=32)
def _notify_sql(count: int) -> str:
    """
    One statement that sends C{count} payloads on L{JOBS_CHANNEL}, in the
    order they are given (a scan of its C{VALUES}, row after row).  Each
    payload is a parameter of its own: a text parameter goes out as it is,
    where an array of them would be escaped character by character.
    """
    rows = ", ".join(["(?)"] * count)
    return f"SELECT pg_notify('{JOBS_CHANNEL}', payload) FROM (VALUES {rows}) AS sent (payload)"


def _notify(txn: Cursor, payloads: list[str]) -> None:
    for start in range(0, len(payloads), _MAX_PAYLOADS):
        chunk = payloads[start : start + _MAX_PAYLOADS]
        txn.execute(_notify_sql(len(chunk)), chunk)


@implementer(IJobObserver)
class JobPublisher:
    """
    Tells the cluster of this node's jobs (register it with
    C{JobsQueue.observe}).

    @ivar node: this node's name, the sender of every payload.
    """

    def __init__(self, reactor: IReactorTime, node: str, db: Pool) -> None:
        self._reactor = reactor
        self.node = node
        self._db = db
        self._pending: dict[int, _Pending] = {}
        self._timer: IDelayedCall | None = None
        self._sending: Deferred[None] | None = None
        self._last_send = float("-inf")
        self._rev = 0

    # IJobObserver

    def listening(self) -> bool:
        # The records are read at the send, the newest then.
        return False

    def added(self, job: Job, record: JobRecord | None) -> None:
        self._entry(job.id, job).added = True
        self._due()

    def changed(self, job: Job, record: JobRecord | None) -> None:
        self._entry(job.id, job).changed = True
        self._due()

    def ended(self, job: Job, record: JobRecord) -> None:
        self._entry(job.id, job).end = record
        self._due()

    # What else the node tells.

    def reaped(self, records: list[JobRecord]) -> None:
        """
        Tell of the final C{records} this node wrote for the jobs of a node
        that is gone.
        """
        for record in records:
            self._entry(record["id"], None).end = record
        self._due()

    def log_grew(self, job_id: int, size: int, final: bool) -> None:
        """
        Tell that the log of job C{job_id} is C{size} bytes long in the
        store (C{final}: the job ended, and that is all of it).
        """
        entry = self._entry(job_id, None)
        entry.log_size = size
        entry.log_final = final
        self._due()

    def flush(self) -> Deferred[None]:
        """
        Send what is pending now; fires once all of it is sent (or failed).
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._sending is not None:
            done: Deferred[None] = Deferred()
            self._sending.addBoth(lambda _: self.flush().chainDeferred(done))
            return done
        return self._send()

    # Sending.

    def _entry(self, job_id: int, job: Job | None) -> _Pending:
        entry = self._pending.get(job_id)
        if entry is None:
            entry = self._pending[job_id] = _Pending(job)
        elif job is not None:
            entry.job = job
        return entry

    def _due(self) -> None:
        if self._timer is not None or self._sending is not None:
            return
        delay = max(0.0, self._last_send + FLUSH_INTERVAL - self._reactor.seconds())
        self._timer = self._reactor.callLater(delay, self._timed)

    def _timed(self) -> None:
        self._timer = None
        self._send()

    def _next_rev(self) -> int:
        # Microseconds of the clock, never less than one more than the last:
        # the reaper's end of a job comes after its node's last word.
        self._rev = max(self._rev + 1, time.time_ns() // 1000)
        return self._rev

    def _items(self, pending: dict[int, _Pending]) -> list[Item]:
        items: list[Item] = []
        for job_id, entry in pending.items():
            if entry.added or entry.changed:
                record = entry.end if entry.end is not None else entry.job.to_record() if entry.job else None
                if record is not None:
                    kind = ItemKind.ADDED if entry.added else ItemKind.CHANGED
                    items.append(JobItem(kind, job_id, self._next_rev(), record))
            if entry.end is not None:
                items.append(JobItem(ItemKind.ENDED, job_id, self._next_rev(), entry.end))
            if entry.log_size is not None:
                items.append(LogItem(job_id, entry.log_size, entry.log_final))
        return items

    def _send(self) -> Deferred[None]:
        pending, self._pending = self._pending, {}
        if not pending:
            return succeed(None)
        self._last_send = self._reactor.seconds()
        payloads = pack(self.node, self._items(pending))
        if len(payloads) <= _MAX_PAYLOADS:
            # One statement, a transaction of its own: one round trip.
            sending = self._db.runOperation(_notify_sql(len(payloads)), payloads)
        else:
            sending = self._db.runInteraction(_notify, payloads)
        self._sending = sending
        sending.addCallbacks(self._sent, self._not_sent, errbackArgs=(pending,))
        return sending

    def _sent(self, _: object) -> None:
        self._sending = None
        if self._pending:
            self._due()

    def _not_sent(self, failure: Failure, pending: dict[int, _Pending]) -> None:
        self._sending = None
        log.warn("Could not tell the cluster of {count} jobs: {error}", count=len(pending), error=failure.getErrorMessage())
        # Told again later, unless newer news came meanwhile.
        for job_id, entry in pending.items():
            newer = self._pending.get(job_id)
            if newer is None:
                self._pending[job_id] = entry
            else:
                newer.added = newer.added or entry.added
                newer.changed = newer.changed or entry.changed
                newer.end = newer.end if newer.end is not None else entry.end
                if newer.log_size is None:
                    newer.log_size, newer.log_final = entry.log_size, entry.log_final
        self._timer = self._reactor.callLater(RETRY_DELAY, self._timed)
