"""
Job history across restarts: the store's start-up, its retention, and queries
over the jobs in memory and those stored.

L{JobHistory.open} readies a store when the daemon starts: jobs it recorded
as C{WAITING} or C{RUNNING} were cut off and become C{ABORTED} (the next id
comes from L{midjobs.store.ids}).  While the daemon runs, finished jobs
older than C{keep_days} or beyond the newest C{keep_records} are pruned in
the background, with their log files.  L{query_jobs} answers C{core.get_jobs}
over the union of memory (fresh records of recent jobs) and the store.
"""

from __future__ import annotations

import heapq
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from ..log_files import remove_log_files
from ..logs import logger
from ..query import Predicate, QueryOptions, compile_filters, filter_list, validate_options
from ._interfaces import IJobStore, JobRecord

__all__ = ["CUT_OFF", "JobHistory", "node_stopped", "query_jobs"]

log = logger(__name__)

#: The error of a job that was running when the daemon stopped or died.
CUT_OFF = "The daemon stopped while this job was running"


def node_stopped(node: str) -> str:
    """
    The error of a job that was running on the node C{node} of a cluster
    when that node stopped, died or lost the database (what the node that
    notices records).
    """
    return f"The node {node} stopped while this job was running"

#: Seconds between two prunings.
PRUNE_INTERVAL = 3600.0

_DAY = 86400.0


class JobHistory:
    """
    A job store opened for a running daemon, and the pruning of old jobs.

    @ivar store: the L{IJobStore}.
    """

    def __init__(
        self, store: IJobStore, reactor: Any, logs_dir: Path, *, keep_days: float, keep_records: int
    ) -> None:
        self.store = store
        self._reactor = reactor
        self._logs_dir = logs_dir
        self.keep_days = keep_days
        self.keep_records = keep_records
        self._loop: LoopingCall | None = None
        self._pruning: Deferred[Any] | None = None

    @classmethod
    async def open(
        cls,
        store: IJobStore,
        reactor: Any,
        logs_dir: Path,
        *,
        keep_days: float,
        keep_records: int,
        node: str | None = None,
    ) -> JobHistory:
        """
        Set C{store} up, mark the jobs it holds as cut off, and start
        pruning (the first time at once, in the background).

        @param node: this daemon's node in a store several daemons share:
            only its own jobs were cut off.
        """
        history = cls(store, reactor, logs_dir, keep_days=keep_days, keep_records=keep_records)
        await store.setup(logs_dir)
        aborted = await store.abort_unfinished(CUT_OFF, node)
        if aborted:
            log.warn("{count} job(s) were cut off when the daemon last stopped: now ABORTED", count=aborted)
        history.start()
        return history

    def start(self) -> None:
        self._loop = LoopingCall(self._prune_in_background)
        self._loop.clock = self._reactor
        self._loop.start(PRUNE_INTERVAL, now=True)

    def _prune_in_background(self) -> Deferred[Any]:
        self._pruning = self.prune()
        self._pruning.addErrback(lambda f: log.failure("Pruning the job history failed", f))
        return self._pruning

    def prune(self, now: float | None = None) -> Deferred[list[int]]:
        """
        Delete the jobs past retention and their logs now; fire with their ids that had logs.
        """
        if now is None:
            now = time.time()
        d: Deferred[list[int]] = self.store.prune(now - self.keep_days * _DAY, self.keep_records)
        d.addCallback(self._delete_logs)
        return d

    def _delete_logs(self, job_ids: list[int]) -> Deferred[list[int]]:
        if not job_ids:
            return succeed(job_ids)
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), remove_log_files, self._logs_dir, job_ids)
        log.info("Pruned the logs of {count} old job(s)", count=len(job_ids))
        return d.addCallback(lambda _: job_ids)

    async def stop(self) -> None:
        """
        Stop pruning and write what is pending.
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._pruning is not None and not self._pruning.called:
            await self._pruning
        await self.store.stop()


def _by_id(record: Mapping[str, Any]) -> int:
    return int(record["id"])


#: Above this many jobs in memory, they are matched in a thread: matching is
#: linear (RE2 for C{~}), but the texts it reads can be large.
MATCH_IN_THREAD = 64


def _window(options: QueryOptions, in_memory: int) -> QueryOptions:
    """
    What to ask the store for, so that its matches and the C{in_memory}
    jobs (which it leaves out) give the query's rows exactly: the rows at
    merged positions C{[offset, offset + limit)} are among the store's at
    positions C{[max(0, offset - in_memory), offset + limit)}.  (A job in
    memory that sorts before the store's first row there has fewer than
    C{in_memory} jobs in memory and C{offset - in_memory} stored ones before
    it: it is before C{offset}.)
    """
    start = max(0, options.offset - in_memory)
    if options.get:
        end = options.offset + 1
    elif options.limit:
        end = options.offset + options.limit
    else:
        end = 0
    return QueryOptions(order_by=options.order_by, offset=start, limit=end - start if end else 0)


def _answer(
    records: Sequence[JobRecord], stored: Any, start: int, predicate: Predicate, options: QueryOptions
) -> Any:
    """
    The answer to a query over C{records} (the jobs in memory, not matched
    yet) and C{stored} (the store's matches from position C{start} on, in
    id order; or their count).
    """
    matched = [record for record in records if predicate(record)]
    if options.count:
        return len(matched) + stored
    rows = list(heapq.merge(sorted(matched, key=_by_id), stored, key=_by_id))
    # Sorted, the first stored row is at position start + (jobs in memory
    # before it), and every row after it at its place: the query's offset
    # in this list is offset - start (memory rows before it are all before offset).
    return filter_list(rows, None, attrs.evolve(options, offset=options.offset - start))


async def query_jobs(
    records: Sequence[JobRecord],
    store: IJobStore | None,
    filters: Sequence[Any] | None,
    options: Mapping[str, Any] | None,
    *,
    reactor: Any = None,
    threadpool: ThreadPool | None = None,
) -> Any:
    """
    C{filter_list} over C{records} (the jobs in memory) and the jobs C{store}
    holds that are not among them, as if they were one list in id order.

    Bad filters or options fail before the store is asked.  Each row is
    matched once: the stored ones by the store (in its own threads), those in
    memory in C{threadpool} (on C{reactor}) when there are more than
    L{MATCH_IN_THREAD} of them, else here.  The store is asked only for the
    rows that may be on the page (L{_window}), however deep its offset.

    @param store: the job history, or C{None} for the jobs in memory only.
    """
    predicate = compile_filters(filters)
    opts: QueryOptions = validate_options(options)
    start = 0
    if store is None:
        stored: Any = 0 if opts.count else []
    else:
        exclude = frozenset(record["id"] for record in records)
        asked = opts
        if not opts.count:
            asked = _window(opts, len(records))
            start = asked.offset
        stored = await store.query(filters, asked, exclude)
    if threadpool is not None and len(records) > MATCH_IN_THREAD:
        return await deferToThreadPool(reactor, threadpool, _answer, records, stored, start, predicate, opts)
    return _answer(records, stored, start, predicate, opts)
