"""
Clearing the job history: what C{core.job_delete} and C{core.jobs_prune} do.

A finished job is deleted everywhere at once: its record in the job store,
its place among the finished jobs the queue keeps in memory, and its log
file (always the one its id gives, L{log_file}, never a path read from a
record); subscribers of C{core.get_jobs} then get a C{removed} event, so that
lists drop it.  A job that is waiting or running is never deleted.

Many jobs go in batches of L{BATCH}: each batch is found by a query over
memory and store (as C{core.get_jobs} answers it) and deleted with one
statement in the store's writer thread, so that the writes of running jobs
get in between two batches, and a prune of any size holds the store for one
batch at a time.  One batch is deleted at a time in the daemon.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

from twisted.internet.defer import DeferredLock
from twisted.internet.threads import deferToThreadPool

from ..errors import CallError
from ..interfaces import ISession
from ..log_files import remove_log_files
from ..logs import logger
from ..store.jobs import DELETE_BATCH

if TYPE_CHECKING:
    from ..middleware import Middleware

__all__ = ["BATCH", "FINISHED", "JobDeletion", "UNFINISHED"]

log = logger(__name__)

#: The states of jobs that may be deleted, and of those that may not.
FINISHED = ("SUCCESS", "FAILED", "ABORTED")
UNFINISHED = ("WAITING", "RUNNING")

#: The most jobs deleted by one query and one statement.
BATCH = DELETE_BATCH

#: The fields of a C{removed} event: the job, and what tells who may see it.
REMOVED_FIELDS = ("id", "method", "credentials")

#: C{query(filters, options)}: C{core.get_jobs} as the daemon itself asks it (no visibility filter).
Query = Callable[[list[Any], dict[str, Any]], Awaitable[Any]]


def _who(app: ISession | None) -> dict[str, str | None]:
    if app is None:
        return {"user": "the daemon", "address": "-"}
    return {"user": getattr(app.user, "username", None), "address": str(app.peer)}


class JobDeletion:
    """
    Deletes finished jobs from the store, from memory and from the logs
    directory of C{middleware}, and tells C{core.get_jobs} subscribers.

    @param query: how the jobs to delete are found.
    """

    def __init__(self, middleware: Middleware, query: Query) -> None:
        self._middleware = middleware
        self._query = query
        #: Held while one batch is found and deleted.
        self._lock = DeferredLock()

    async def delete(self, job_id: int, app: ISession | None = None) -> None:
        """
        Delete the job C{job_id}.

        @raise CallError: C{ENOENT}, there is no such job; C{EBUSY}, it is
            waiting or running (abort it and let it end first).
        """
        async with self._lock:
            found = await self._query([["id", "=", job_id]], {"select": [*REMOVED_FIELDS, "state"]})
            if not found:
                raise CallError(f"Job {job_id} does not exist", errno.ENOENT)
            record = found[0]
            if record["state"] not in FINISHED:
                raise CallError(
                    f"Job {job_id} is {record['state']}: only a job that has ended can be deleted "
                    "(abort it, and delete it once it has ended)",
                    errno.EBUSY,
                )
            await self._delete([{name: record[name] for name in REMOVED_FIELDS}])
        log.info(
            "{user} from {address} deleted job {job_id} ({method})",
            job_id=job_id,
            method=record["method"],
            **_who(app),
        )

    async def prune(self, filters: Sequence[Any], app: ISession | None = None) -> dict[str, int]:
        """
        Delete the finished jobs that match C{filters} (already valid),
        L{BATCH} at a time in id order.

        @return: C{{"deleted": N, "skipped": M}}, M the jobs that matched
            but were waiting or running when the last batch was deleted.
        """
        deleted = 0
        after = 0
        while True:
            async with self._lock:
                # "nin": SQLite then walks the ids in order from `after` and
                # stops at the batch's end; "in" over the state index would
                # sort every ended job at each batch (a prune of 100,000 jobs
                # took 29 s instead of 11).
                batch = await self._query(
                    [*filters, ["state", "nin", list(UNFINISHED)], ["id", ">", after]],
                    {"order_by": ["id"], "limit": BATCH, "select": list(REMOVED_FIELDS)},
                )
                if batch:
                    await self._delete(batch)
            deleted += len(batch)
            if len(batch) < BATCH:
                break
            after = batch[-1]["id"]
        skipped = await self._query([*filters, ["state", "in", list(UNFINISHED)]], {"count": True})
        log.info(
            "{user} from {address} pruned {deleted} job(s) from the history; {skipped} waiting or running skipped",
            deleted=deleted,
            skipped=skipped,
            **_who(app),
        )
        return {"deleted": deleted, "skipped": skipped}

    async def _delete(self, records: list[dict[str, Any]]) -> None:
        """
        Delete the finished jobs of C{records} (their L{REMOVED_FIELDS}):
        from memory, then from the store, then their log files; then tell
        of each.  Should the store fail, the jobs are still listed (from the
        store, with the same records) and their logs kept: deleting them
        again finishes the work.
        """
        middleware = self._middleware
        job_ids = [record["id"] for record in records]
        middleware.jobs.forget(job_ids)
        if middleware.job_store is not None:
            await middleware.job_store.delete(job_ids)
        reactor = middleware.reactor
        await deferToThreadPool(reactor, reactor.getThreadPool(), remove_log_files, middleware.logs_dir, job_ids)
        for record in records:
            middleware.send_event("core.get_jobs", "removed", record["id"], record)
