"""
Job history in PostgreSQL: the L{IJobStore} of a node of a cluster.

The rows, records, queries, deletion and retention are those of the SQLite
store (L{SqlJobStore}); what differs is how records are written and whose
they are.  Each row names the node that runs the job, and a node's write
changes a row only while the job is unfinished and its own: once another
node recorded it as C{ABORTED} (the node was gone, see L{abort_node_jobs}),
a late write of the gone node changes nothing.  Job ids come from the
sequence C{job_ids} (L{midjobs.store.ids.PgJobIds}), so no id is ever given
twice without the store's help.

A write that finds the database unavailable is tried again, with a growing
pause, for up to C{write_timeout} seconds: the callers of a durable write
wait meanwhile, and the write fails only after that.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Collection

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from zope.interface import implementer

from ..logs import logger
from ..query import QueryOptions
from ._interfaces import IJobStore, JobRecord
from ._sqlquery import POSTGRESQL, copied_fields
from .database import Cursor, Row
from .errors import Unavailable
from .jobs import SqlJobStore, abort, abort_unfinished_rows, parse, rewrite_rows, sync_finished_logs
from .pg import PgDatabase

__all__ = ["PgJobStore", "abort_node_jobs"]

log = logger(__name__)

#: The most rows one statement writes (11 parameters a row; PostgreSQL allows 65535).
_MAX_ROWS = 500

#: The first and the longest pause between two attempts of a write.
_FIRST_RETRY = 0.05
_LONGEST_RETRY = 1.0

#: A row as the writer thread gets it: the record's columns, its JSON, the
#: copied fields (L{copied_fields}), and the node.
_NodeRow = tuple[
    int, str, str, "float | None", "float | None", "str | None", str, "str | None", "str | None",
    "int | float | None", str,
]


@functools.lru_cache(maxsize=64)
def _upsert(rows: int) -> str:
    """
    One statement that writes C{rows} rows, each only over a row of the same
    node whose job is unfinished.
    """
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO jobs (id, method, state, time_started, time_finished, logs_path, record, "
        f"username, job_node, errno, node) VALUES {values} "
        "ON CONFLICT (id) DO UPDATE SET state = excluded.state, time_started = excluded.time_started, "
        "time_finished = excluded.time_finished, logs_path = excluded.logs_path, record = excluded.record, "
        "username = excluded.username, job_node = excluded.job_node, errno = excluded.errno "
        "WHERE jobs.state IN ('WAITING', 'RUNNING') AND jobs.node = excluded.node"
    )


def abort_node_jobs(txn: Cursor, error: str, now: float, node: str) -> list[JobRecord]:
    """
    In the caller's transaction: record every unfinished job of C{node} as
    C{ABORTED} with C{error} at C{now} (seconds since the epoch), and return
    their new records, by id.  Their rows stay locked until the transaction
    ends, so a concurrent write of C{node} waits, then changes nothing.

    The records keep the log path they had (the logs are C{node}'s) and get
    no C{logs_excerpt}: the log files are not here.
    """
    txn.execute(
        "SELECT id, record FROM jobs WHERE node = ? AND state IN ('WAITING', 'RUNNING') ORDER BY id FOR UPDATE",
        (node,),
    )
    records = []
    for job_id, text in txn.fetchall():
        record = parse(job_id, text)
        if record is None:
            continue
        abort(record, error, now)
        records.append(record)
    rewrite_rows(txn, records)
    return records


@implementer(IJobStore)
class PgJobStore(SqlJobStore):
    """
    L{IJobStore} on a PostgreSQL database that several daemons (nodes) share.

    @ivar node: the name of this daemon's node, which its rows carry.
    """

    def __init__(
        self,
        db: PgDatabase,
        reactor: Any,
        *,
        node: str,
        flush_interval: float = 0.2,
        write_timeout: float = 10.0,
    ) -> None:
        """
        @param db: the opened database; the store does not close it.
        @param node: the name of this daemon's node.
        @param flush_interval: how long a change nobody waits for may wait.
        @param write_timeout: how long a write is tried again while the
            database is unavailable before it fails.
        """
        super().__init__(db, reactor, reader=db, flush_interval=flush_interval)
        self._db = db
        self.node = node
        self._write_timeout = write_timeout

    # Start-up.

    def setup(self, logs_dir: Path | None = None) -> Deferred[int]:
        """
        Bring the schema up to date, then copy the filtered fields of the
        finished rows that lack them (L{fill_copies}).
        """
        migrated = super().setup(logs_dir)
        return migrated.addCallback(lambda ran: Deferred.fromCoroutine(self._fill_copies()).addCallback(lambda _: ran))

    async def _fill_copies(self) -> None:
        after: int | None = 0
        filled = 0
        while after is not None:
            after, count = await self._pool.runInteraction(fill_copies, after, _MAX_ROWS)
            filled += count
        if filled:
            log.info("Job store: the filtered fields of {count} job(s) an older node wrote are copied", count=filled)

    def last_id(self) -> Deferred[int]:
        return self._pool.runInteraction(_last_id)

    def abort_unfinished(self, error: str, node: str | None = None) -> Deferred[int]:
        return self._pool.runInteraction(
            _abort_unfinished, error, time.time(), node if node is not None else self.node, self._logs_dir
        )

    # Writes.

    def note_id(self, job_id: int) -> None:
        """
        Nothing to keep: ids come from the sequence C{job_ids}, which never
        gives one twice.
        """

    def _commit(self, rows: list[Any], taken: int) -> Deferred[None]:
        return Deferred.fromCoroutine(self._commit_rows([(*row, self.node) for row in rows]))

    async def _commit_rows(self, rows: list[_NodeRow]) -> None:
        deadline = self._reactor.seconds() + self._write_timeout
        pause = _FIRST_RETRY
        # Rows that fit in one statement: that statement is the transaction, one round trip.
        write = self._db.runStatements if len(rows) <= _MAX_ROWS else self._db.runInteraction
        while True:
            try:
                await write(_write_rows, rows)
                return
            except Unavailable as e:
                if self._reactor.seconds() + pause > deadline:
                    raise
                if pause == _FIRST_RETRY:
                    log.warn("{count} job record(s) wait for the database: {error}", count=len(rows), error=e)
            await deferLater(self._reactor, pause, lambda: None)
            pause = min(pause * 2, _LONGEST_RETRY)

    # Reads.

    dialect = POSTGRESQL

    def query(self, filters: Any, options: QueryOptions, exclude_ids: Collection[int]) -> Deferred[Any]:
        # The rows come from the server as the scan asks for them.
        return self._db.runScan(self._query, filters, options, exclude_ids, self._logs_dir, self.dialect)

    # Health.

    def check_writable(self) -> Deferred[None]:
        """
        Whether the database takes writes: a transaction that is given a
        transaction id (which a standby or a read-only session refuses) and
        commits.

        @return: fires if the database takes writes; fails with why not.
        """
        d = self._pool.runInteraction(_probe_write)
        d.addCallback(self._probed)
        return d


def _last_id(txn: Cursor) -> int:
    txn.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM job_ids")
    given = _one(txn)
    txn.execute("SELECT MAX(id) FROM jobs")
    highest = _one(txn)
    return max(int(given[0]), int(highest[0] or 0))


def _abort_unfinished(txn: Cursor, error: str, now: float, node: str, logs_dir: Path | None) -> int:
    txn.execute(
        "SELECT id, record FROM jobs WHERE node = ? AND state IN ('WAITING', 'RUNNING') ORDER BY id FOR UPDATE",
        (node,),
    )
    return abort_unfinished_rows(txn, txn.fetchall(), error, now, logs_dir)


def fill_copies(txn: Cursor, after: int, most: int) -> tuple[int | None, int]:
    """
    Copy the filtered fields (L{copied_fields}) of up to C{most} finished
    rows after the id C{after} that have none: rows a node still on older
    code wrote during a rolling upgrade (every record this code writes names
    its node).  Unfinished rows are left to their node's last write, or to
    the reaping of their node (L{abort_node_jobs}).

    @return: the last id read (C{None} once there are no more), and how many
        rows got their copies.
    """
    txn.execute(
        "SELECT id, record FROM jobs WHERE job_node IS NULL AND state NOT IN ('WAITING', 'RUNNING') AND id > ? "
        "ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED",
        (after, most),
    )
    rows = txn.fetchall()
    records = [record for record in (parse(job_id, text) for job_id, text in rows) if record is not None]
    txn.executemany(
        "UPDATE jobs SET username = ?, job_node = ?, errno = ? WHERE id = ?",
        [(*copied_fields(record), record["id"]) for record in records],
    )
    return (rows[-1][0] if len(rows) == most else None), len(records)


def _write_rows(txn: Cursor, rows: list[_NodeRow]) -> None:
    sync_finished_logs(rows)
    for start in range(0, len(rows), _MAX_ROWS):
        chunk = rows[start : start + _MAX_ROWS]
        txn.execute(_upsert(len(chunk)), [value for row in chunk for value in row])


def _probe_write(txn: Cursor) -> None:
    txn.execute("SELECT current_setting('transaction_read_only')")
    if _one(txn)[0] == "on":
        raise Unavailable("The job database is read-only")
    txn.execute("SELECT pg_current_xact_id()")
    _one(txn)


def _one(txn: Cursor) -> Row:
    row = txn.fetchone()
    assert row is not None  # an aggregate or a function call answers one row
    return row
