"""
Where new jobs get their ids (L{IJobIds}).

A daemon on its own counts: L{StoredJobIds} starts above the highest id its
store ever held and has the store keep the ids of jobs it does not store;
without a store, L{CountedJobIds} counts from 1.  The nodes of a cluster share
the sequence C{job_ids}: L{PgJobIds} takes its ids from it in blocks, ahead of
need, so that queueing a job costs no round trip.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from ..logs import logger
from ._interfaces import IJobIds, IJobStore
from .database import Row

if TYPE_CHECKING:
    # psycopg is needed for PostgreSQL only: a daemon on SQLite runs without it.
    from .pg import PgDatabase

__all__ = ["CountedJobIds", "PgJobIds", "StoredJobIds"]

log = logger(__name__)

#: The largest block L{PgJobIds} takes at once.
MAX_BLOCK = 256

#: L{PgJobIds} keeps its blocks large enough to last this long (seconds) at
#: the rate ids were taken over the last L{_RATE_WINDOW} seconds or more.
_BLOCK_LASTS = 0.1
_RATE_WINDOW = 1.0


class _Waiters:
    """
    The Deferreds of L{IJobIds.available} calls, fired together.
    """

    def __init__(self) -> None:
        self._waiting: list[Deferred[None]] = []

    def wait(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def fire(self, result: None | Failure) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(None)


@implementer(IJobIds)
class CountedJobIds:
    """
    Ids counted in memory from C{first}: the ids of a daemon that keeps no
    job history (nothing stored, nothing to be kept from).
    """

    def __init__(self, first: int = 1) -> None:
        self._next = first

    def start(self) -> Deferred[None]:
        return succeed(None)

    def take(self) -> int:
        job_id = self._next
        self._next += 1
        return job_id

    def available(self) -> Deferred[None]:
        return succeed(None)

    def skipped(self, job_id: int) -> None:
        """
        Nothing to keep: no id outlives the daemon.
        """


@implementer(IJobIds)
class StoredJobIds:
    """
    The ids of a daemon's own store (SQLite): counted from above the highest
    id the store ever held (L{IJobStore.last_id}); the store keeps the ids of
    jobs it does not store (L{IJobStore.note_id}).
    """

    def __init__(self, store: IJobStore) -> None:
        self._store = store
        self._next: int | None = None
        self._waiters = _Waiters()

    def start(self) -> Deferred[None]:
        d: Deferred[int] = self._store.last_id()
        return d.addCallback(self._started)

    def _started(self, last: int) -> None:
        self._next = last + 1
        self._waiters.fire(None)

    def take(self) -> int | None:
        if self._next is None:
            return None
        job_id = self._next
        self._next += 1
        return job_id

    def available(self) -> Deferred[None]:
        return succeed(None) if self._next is not None else self._waiters.wait()

    def skipped(self, job_id: int) -> None:
        self._store.note_id(job_id)


@implementer(IJobIds)
class PgJobIds:
    """
    Ids from the sequence C{job_ids} that the nodes of a cluster share,
    taken a block at a time with one statement.

    A new block is fetched when fewer than half of the current block size
    remain.  When the ids run out before it arrives (a burst), L{take}
    answers C{None} until it does, and the block size doubles, up to
    L{MAX_BLOCK}; a block that arrives before they ran out halves it again,
    down to C{block}, but not below what lasts L{_BLOCK_LASTS} seconds at
    the rate ids were taken over the last second or more: under a steady
    load, a fetch (a transaction) every tenth of a second at most, not one
    every C{block} jobs.  Ids are unique across the cluster and roughly in
    order; those a node never gave are skipped (ids may have gaps).
    """

    def __init__(self, db: PgDatabase, reactor: Any, block: int = 16) -> None:
        """
        @param db: the opened database.
        @param block: how many ids a block has at first (and at least).
        """
        if not 1 <= block <= MAX_BLOCK:
            raise ValueError(f"a block of ids has 1 to {MAX_BLOCK} ids, not {block}")
        self._db = db
        self._reactor = reactor
        self._least = block
        #: How many ids the next block has.
        self.block = block
        self._ids: deque[int] = deque()
        self._fetching: Deferred[None] | None = None
        #: Whether the ids ran out since the last block arrived.
        self._ran_out = False
        self._waiters = _Waiters()
        #: Ids taken since C{_counted_from} (reactor seconds), and the rate
        #: (ids a second) of the last window of at least L{_RATE_WINDOW}.
        self._taken = 0
        self._counted_from: float | None = None
        self._rate = 0.0

    @property
    def at_hand(self) -> int:
        """
        How many ids L{take} can give before the next block arrives.
        """
        return len(self._ids)

    def start(self) -> Deferred[None]:
        return self.available()

    def take(self) -> int | None:
        if not self._ids:
            if not self._ran_out:
                self._ran_out = True
                self.block = min(self.block * 2, MAX_BLOCK)
            self._fetch()
            return None
        job_id = self._ids.popleft()
        self._taken += 1
        if len(self._ids) < self.block / 2:
            self._fetch()
        return job_id

    def available(self) -> Deferred[None]:
        """
        Fires once L{take} will give an id; fails (with the store's
        C{Unavailable}, say) if the block it waits for cannot be fetched.
        """
        if self._ids:
            return succeed(None)
        d = self._waiters.wait()
        self._fetch()
        return d

    def skipped(self, job_id: int) -> None:
        """
        Nothing to keep: the sequence never gives an id twice.
        """

    def _fetch(self) -> None:
        if self._fetching is not None:
            return
        d = self._db.runQuery("SELECT nextval('job_ids') FROM generate_series(1, ?)", (self.block,))
        self._fetching = d.addCallbacks(self._fetched, self._failed)

    def _fetched(self, rows: list[Row]) -> None:
        self._fetching = None
        now = self._reactor.seconds()
        if self._counted_from is None:
            self._counted_from = now
        elif now - self._counted_from >= _RATE_WINDOW:
            self._rate = self._taken / (now - self._counted_from)
            self._taken, self._counted_from = 0, now
        if not self._ran_out:
            lasting = min(MAX_BLOCK, math.ceil(self._rate * _BLOCK_LASTS))
            self.block = max(self.block // 2, self._least, lasting)
        self._ran_out = False
        self._ids.extend(sorted(int(job_id) for (job_id,) in rows))
        self._waiters.fire(None)

    def _failed(self, failure: Failure) -> None:
        self._fetching = None
        log.failure("No job ids could be taken from the database {url}", failure, url=self._db.safe_url)
        self._waiters.fire(failure)
