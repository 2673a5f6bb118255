"""
Job history in SQLite: the embedded L{IJobStore}.

One row per non-transient job, keyed by its id.  The record itself is kept as
its wire JSON (C{docs/protocol.rst}, "The job record"); copies of the fields that queries and
retention look for sit in indexed columns beside it.

L{SqlJobStore} is what a store on SQL is whatever its engine (its SQL runs on
SQLite and PostgreSQL alike, see L{midjobs.store.pg_jobs}); L{SQLiteJobStore}
adds SQLite's writes, ids and start-up.

Writes go through a L{WriteBatch} to the daemon's one-connection pool, so
every burst of writes is one transaction (most often one statement, which
SQLite commits as it runs it) and SQL never runs on the reactor thread.
Reads may use a second pool on the same file, of L{READERS} connections: in
WAL mode a reader never waits for the writer or for other readers, so a long
scan holds back neither the commits that jobs wait for nor the other queries.
"""

from __future__ import annotations

import abc
import datetime
import functools
import math
import os
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Protocol, Sequence, cast

import attrs
from twisted.enterprise.adbapi import ConnectionPool
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import wire_json
from ..lifecycle import JobAborted
from ..log_excerpt import read_excerpt
from ..log_files import log_file
from ..logs import logger
from ..query import Predicate, QueryOptions, filter_list
from ._batch import WriteBatch
from ._interfaces import IDurableWrites, IJobStore, JobRecord, Written
from ._sqlquery import SQLITE, Dialect, copied_fields, translate
from .database import Cursor, Pool, Row, close_database, ensure_schema

__all__ = [
    "DELETE_BATCH",
    "JOBS_SCHEMA",
    "READERS",
    "SQLiteJobStore",
    "SqlJobStore",
    "abort",
    "abort_unfinished_rows",
    "encode",
    "parse",
    "row_of",
    "sync_finished_logs",
]

log = logger(__name__)

#: The schema history of the C{jobs} part (see L{ensure_schema}): only append.
JOBS_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        method TEXT NOT NULL,
        state TEXT NOT NULL,
        time_started REAL,
        time_finished REAL,
        logs_path TEXT,
        record TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS jobs_method_state ON jobs (method, state, id)",
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id)",
    "CREATE INDEX IF NOT EXISTS jobs_time_finished ON jobs (time_finished)",
    # Copies of the fields the task manager filters on (L{copied_fields}), filled in for the rows there are.
    "ALTER TABLE jobs ADD COLUMN username TEXT",
    "ALTER TABLE jobs ADD COLUMN job_node TEXT",
    "ALTER TABLE jobs ADD COLUMN errno NUMERIC",
    """
    UPDATE jobs SET
        username = CASE WHEN json_type(record, '$.credentials.data.username') = 'text'
            THEN json_extract(record, '$.credentials.data.username') END,
        job_node = CASE WHEN json_type(record, '$.node') = 'text' THEN json_extract(record, '$.node') END,
        errno = CASE json_type(record, '$.exc_info.errno')
            WHEN 'integer' THEN CASE WHEN abs(json_extract(record, '$.exc_info.errno')) <= 9007199254740992
                THEN json_extract(record, '$.exc_info.errno') END
            WHEN 'real' THEN json_extract(record, '$.exc_info.errno')
            WHEN 'true' THEN 1
            WHEN 'false' THEN 0
        END
    WHERE json_valid(record)
    """,
    # Only the start time is indexed (its range, its sort).  A user's or a node's
    # jobs are found by reading the id index (their page) or every row's column
    # (their count): a few ms at 100,000 jobs, where each index would cost every
    # job's write another b-tree insertion.
    "CREATE INDEX IF NOT EXISTS jobs_time_started ON jobs (time_started)",
)


@functools.lru_cache(maxsize=64)
def _upsert(rows: int) -> str:
    """
    One statement that writes C{rows} rows: the writer thread then gives up
    the GIL for SQLite once per batch, not once per row.
    """
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO jobs (id, method, state, time_started, time_finished, logs_path, record, username, job_node, "
        f"errno) VALUES {values} "
        "ON CONFLICT (id) DO UPDATE SET state = excluded.state, time_started = excluded.time_started, "
        "time_finished = excluded.time_finished, logs_path = excluded.logs_path, record = excluded.record, "
        "username = excluded.username, job_node = excluded.job_node, errno = excluded.errno"
    )


#: How many connections the pool that queries read through should have: a
#: few slow scans (one connection runs at most C{[limits] history_queries})
#: then leave readers free for the other queries.
READERS = 4

#: The most rows one statement writes (SQLite allows 32766 variables).
_MAX_ROWS = 300

_FINISHED = frozenset({"SUCCESS", "FAILED", "ABORTED"})

#: A C{LIMIT} that keeps every row (both engines take a C{LIMIT} with an C{OFFSET}).
_NO_LIMIT = 2**62

#: Rows read from a cursor at once, and deleted by one pruning transaction.
_FETCH = 256
_PRUNE_BATCH = 2000

#: The most ids one L{SQLiteJobStore.delete} statement (and transaction) names.
DELETE_BATCH = 500

#: The columns of a record (L{row_of}): its fields and its JSON.
_RecordRow = tuple[int, str, str, "float | None", "float | None", "str | None", str]

#: A row as the writer thread gets it: L{row_of}'s columns and the copied
#: fields (L{copied_fields}).
_Row = tuple[
    int, str, str, "float | None", "float | None", "str | None", str, "str | None", "str | None", "int | float | None"
]

#: The key under which the batch holds the highest id taken by a job that is not stored.
_TAKEN = "taken id"


@attrs.frozen
class _Taken:
    job_id: int


def _date(value: Any) -> Any:
    """
    A time in its wire form (what C{wire_json} would write), if it is a datetime.
    """
    return wire_json.to_wire(value) if isinstance(value, datetime.datetime) else value


def _column(time: Any) -> float | None:
    """
    A time's column: the seconds of its wire form (L{_date}), or C{None}.
    """
    return time["$date"] / 1000 if isinstance(time, dict) else None


def _plain(value: Any) -> Any:
    """
    A JSON-safe copy of C{value}: what has no wire form becomes its C{repr}.
    """
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    try:
        return wire_json.to_wire(value)
    except TypeError:
        return repr(value)


def encode(record: JobRecord) -> str:
    """
    The stored form of C{record}: its wire JSON.  A value the wire cannot
    carry (an internal call's argument, say) is stored as its C{repr}.
    """
    try:
        return wire_json.dumps(record)
    except (TypeError, ValueError):
        return wire_json.dumps(_plain(record))


def row_of(record: JobRecord) -> _RecordRow:
    """
    The columns of C{record}'s row.  Its times go to the JSON and to their
    columns from one conversion.
    """
    started, finished = _date(record["time_started"]), _date(record["time_finished"])
    body = dict(record, time_started=started, time_finished=finished)
    return (
        record["id"],
        record["method"],
        record["state"],
        _column(started),
        _column(finished),
        record["logs_path"],
        encode(body),
    )


def _sync_file(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def parse(job_id: int, text: str) -> JobRecord | None:
    """
    The record stored as C{text} in the row of C{job_id}, with that id (what
    the database says of it is not trusted), its other fields as stored; or
    C{None} (and a warning) if C{text} is not a JSON object.
    """
    try:
        record = wire_json.loads(text)
    except ValueError:
        log.warn("The stored record of job {job_id} is not valid JSON; it is skipped", job_id=job_id)
        return None
    if not isinstance(record, dict):
        log.warn("The stored record of job {job_id} is not an object; it is skipped", job_id=job_id)
        return None
    record["id"] = job_id
    return record


def _decode(job_id: int, text: str, logs_dir: Path | None) -> JobRecord | None:
    """
    The record stored as C{text} in the row of C{job_id}, with that id and
    the log path derived from it (L{log_file}): what the database says of
    either is not trusted, a restored backup may have crafted it.  Without
    C{logs_dir}, a record shows no log path.
    """
    record = parse(job_id, text)
    if record is not None and record.get("logs_path") is not None:
        record["logs_path"] = str(log_file(logs_dir, job_id)) if logs_dir is not None else None
    return record


def abort(record: JobRecord, error: str, now: float) -> None:
    """
    Make C{record} (of a job stored as C{WAITING} or C{RUNNING} whose daemon
    is gone) that of a job C{ABORTED} with C{error} at C{now} (seconds since
    the epoch).
    """
    aborted = JobAborted(error)
    record.update(
        state="ABORTED",
        error=error,
        exc_info={"repr": repr(aborted), "type": "JobAborted", "errno": aborted.errno, "extra": None},
        time_finished=wire_json.from_wire({"$date": int(now * 1000)}),
    )


def abort_unfinished_rows(txn: Cursor, rows: list[Row], error: str, now: float, logs_dir: Path | None) -> int:
    """
    Record the unfinished jobs of C{rows} (C{(id, record)}, read in this
    transaction) as C{ABORTED} with C{error} at C{now}, each with the
    C{logs_excerpt} of its log file under C{logs_dir} if it kept logs.
    Return how many there were.
    """
    records = []
    for job_id, text in rows:
        record = _decode(job_id, text, logs_dir)
        if record is None:
            continue
        abort(record, error, now)
        if record.get("logs_path"):
            try:
                assert logs_dir is not None  # a record shows a log path only with one
                record["logs_excerpt"] = read_excerpt(log_file(logs_dir, job_id))
            except OSError:
                pass
        records.append(record)
    rewrite_rows(txn, records)
    return len(records)


def rewrite_rows(txn: Cursor, records: Sequence[JobRecord]) -> None:
    """
    Write C{records} over their rows: the state, the end, the JSON and the
    copied columns (L{copied_fields}); what else a row holds stays.
    """
    updates = []
    for record in records:
        finished = _date(record.get("time_finished"))
        text = encode(dict(record, time_finished=finished))
        updates.append((record.get("state"), _column(finished), text, *copied_fields(record), record["id"]))
    txn.executemany(
        "UPDATE jobs SET state = ?, time_finished = ?, record = ?, username = ?, job_node = ?, errno = ? WHERE id = ?",
        updates,
    )


class _Connection(Protocol):
    """
    The connection L{ConnectionPool.runWithConnection} hands a function.
    """

    def cursor(self) -> Cursor:
        """
        A cursor on the connection.
        """


class _ReadCursor(Cursor, Protocol):
    """
    A L{Cursor} that also reads rows in blocks (the queries' cursor).
    """

    def fetchmany(self, size: int = ..., /) -> list[Row]:
        """
        The next C{size} rows of the last query, fewer at its end.
        """


@implementer(IDurableWrites)
class SqlJobStore(abc.ABC):
    """
    What a job store on SQL is whatever its engine: the group commit of
    records through a L{WriteBatch}, reads, deletion and retention.  The
    SQL here runs on SQLite and PostgreSQL alike; an engine's store adds
    how it writes rows (L{_commit}), its ids and its start-up.

    @param pool: the database every write goes through.
    @param reader: the database queries read through (C{pool} itself, or
        another pool on the same database).
    @param flush_interval: how long a change nobody waits for may wait.
    """

    def __init__(self, pool: Pool, reactor: Any, *, reader: Pool, flush_interval: float) -> None:
        self._pool = pool
        self._reader = reader
        self._reactor = reactor
        self._logs_dir: Path | None = None
        self._batch = WriteBatch(reactor, self._write, flush_interval)
        #: Why the last write of job records failed, if it did (cleared by one that works).
        self._write_failed: str | None = None

    @property
    def flush_interval(self) -> float:
        return self._batch.interval

    @property
    def batch(self) -> WriteBatch:
        return self._batch

    def setup(self, logs_dir: Path | None = None) -> Deferred[int]:
        self._logs_dir = logs_dir
        return ensure_schema(self._pool, "jobs", JOBS_SCHEMA)

    def get(self, job_id: int) -> Deferred[JobRecord | None]:
        return self._reader.runInteraction(_get, job_id, self._logs_dir)

    # Writes.

    def record_created(self, job_id: int, record: JobRecord | Callable[[], JobRecord]) -> Deferred[None]:
        return self._batch.add(job_id, record, durable=True)  # type: ignore[return-value]

    def created(self, job_id: int, record: JobRecord | Callable[[], JobRecord], written: Written) -> None:
        self._batch.add_durable(job_id, record, written)

    def record_changed(self, job_id: int, record: Callable[[], JobRecord]) -> None:
        pending = self._batch.pending(job_id)
        if pending is not None and (callable(pending) or pending["state"] in _FINISHED):
            return  # What is pending builds the newest record, or is the last one.
        self._batch.add(job_id, record, durable=False)

    def record_finished(self, record: JobRecord) -> Deferred[None]:
        return self._batch.add(record["id"], record, durable=True)  # type: ignore[return-value]

    def finished(self, record: JobRecord, written: Written) -> None:
        self._batch.add_durable(record["id"], record, written)

    def note_id(self, job_id: int) -> None:
        self._batch.add(_TAKEN, _Taken(job_id), durable=False)

    def _write(self, values: list[Any]) -> Deferred[None]:
        rows = []
        taken = 0
        for value in values:
            if isinstance(value, _Taken):
                taken = value.job_id
            else:
                # Encoded here, on the reactor thread: a record holds the
                # job's own values (its result), which only this thread may read.
                record = value() if callable(value) else value
                rows.append(row_of(record) + copied_fields(record))
        d = self._commit(rows, taken)
        d.addBoth(self._written)
        return d

    @abc.abstractmethod
    def _commit(self, rows: list[_Row], taken: int) -> Deferred[None]:
        """
        Write C{rows} in one transaction, and keep C{taken} (the highest id
        a job that is not stored took, or C{0}) from being given again.
        """

    def _written(self, result: Any) -> Any:
        if isinstance(result, Failure):
            self._write_failed = result.getErrorMessage() or type(result.value).__name__
        else:
            self._write_failed = None
        return result

    def _probed(self, _: None) -> None:
        if self._write_failed is not None:
            self._write_failed = None

    def stop(self) -> Deferred[None]:
        d = self._batch.close()
        d.addCallback(
            lambda _: log.info(
                "Job store: {written} record(s) written in {flushes} transaction(s)",
                written=self._batch.written, flushes=self._batch.flushes,
            )
        )
        return d

    # Reads.

    #: The engine's SQL where it differs (L{midjobs.store._sqlquery.Dialect}).
    dialect: Dialect = SQLITE

    def query(self, filters: Any, options: QueryOptions, exclude_ids: Collection[int]) -> Deferred[Any]:
        return self._reader.runInteraction(self._query, filters, options, exclude_ids, self._logs_dir, self.dialect)

    @staticmethod
    def _query(
        txn: Cursor,
        filters: Any,
        options: QueryOptions,
        exclude_ids: Collection[int],
        logs_dir: Path | None,
        dialect: Dialect = SQLITE,
    ) -> Any:
        """
        The matches at C{options.offset} and after (C{options.limit} of
        them, C{1} with C{options.get}, or all), in C{options.order_by} order
        (ties by id), as a list in id order; or, with C{options.count}, how
        many match.  SQL counts and pages when it answers the filters
        exactly in the query's order; else the rows it finds are checked
        here, and only as many read as the answer needs.
        """
        # Both engines' cursors read rows in blocks (adbapi's transaction passes fetchmany on).
        reader = cast(_ReadCursor, txn)
        sql = translate(filters, options, dialect)
        where, params = sql.where, list(sql.params)
        if exclude_ids:
            where = f"{where} AND {dialect.excluded}" if where else f"WHERE {dialect.excluded}"
            params.append(dialect.ids(sorted(exclude_ids)))
        residual = sql.residual
        if options.count:
            if residual is None:
                txn.execute(f"SELECT COUNT(*) FROM jobs {where}", params)
                counted = txn.fetchone()
                assert counted is not None  # COUNT(*) always answers one row
                return int(counted[0])
            txn.execute(f"SELECT id, record FROM jobs {where}", params)
            return sum(1 for _ in _matches(reader, residual, logs_dir))
        wanted = 1 if options.get else options.limit
        if sql.ordered and sql.guard is not None:
            txn.execute(f"SELECT 1 FROM jobs {where} {'AND' if where else 'WHERE'} ({sql.guard}) LIMIT 1", params)
            if txn.fetchone() is not None:
                # A value SQL cannot sort with the others: Python sorts.
                sql = attrs.evolve(sql, order="ORDER BY id ASC", ordered=False)
        if sql.ordered:
            if residual is None:
                # SQL's rows are the answer: it skips and stops, over the
                # ids alone (an order it sorts carries no records), then
                # reads the page's records.
                txn.execute(
                    f"SELECT id, record FROM jobs WHERE id IN "
                    f"(SELECT id FROM jobs {where} {sql.order} LIMIT ? OFFSET ?) {sql.order}",
                    [*params, wanted or _NO_LIMIT, options.offset],
                )
                found = list(_matches(reader, None, logs_dir, wanted or _FETCH))
            else:
                txn.execute(f"SELECT id, record FROM jobs {where} {sql.order}", params)
                matches = _matches(reader, residual, logs_dir, options.offset + wanted if wanted else _FETCH)
                found = list(islice(matches, options.offset, options.offset + wanted if wanted else None))
        else:
            # An order SQL does not give: every match, in filter_list's order here.
            txn.execute(f"SELECT id, record FROM jobs {where} {sql.order}", params)
            window = QueryOptions(order_by=options.order_by, offset=options.offset, limit=wanted)
            found = cast(list[JobRecord], filter_list(list(_matches(reader, residual, logs_dir)), None, window))
        found.sort(key=_record_id)
        return found

    # Deletion.

    def delete(self, job_ids: Sequence[int]) -> Deferred[int]:
        return Deferred.fromCoroutine(self._delete_all(list(job_ids)))

    async def _delete_all(self, job_ids: list[int]) -> int:
        deleted = 0
        for start in range(0, len(job_ids), DELETE_BATCH):
            chunk = job_ids[start : start + DELETE_BATCH]
            # One transaction each: the writes of running jobs are queued in between.
            deleted += await self._pool.runInteraction(self._delete_rows, chunk)
        return deleted

    @staticmethod
    def _delete_rows(txn: Cursor, job_ids: list[int]) -> int:
        txn.execute(_delete(len(job_ids)), job_ids)
        return txn.rowcount

    # Retention.

    def prune(self, finished_before: float, max_records: int) -> Deferred[list[int]]:
        return Deferred.fromCoroutine(self._prune(finished_before, max_records))

    async def _prune(self, finished_before: float, max_records: int) -> list[int]:
        with_logs: list[int] = []
        while True:
            deleted, logs = await self._pool.runInteraction(self._prune_batch, finished_before, max_records)
            with_logs.extend(logs)
            if deleted < _PRUNE_BATCH:
                return with_logs

    @staticmethod
    def _prune_batch(txn: Cursor, finished_before: float, max_records: int) -> tuple[int, list[int]]:
        """
        Delete at most L{_PRUNE_BATCH} jobs: those too old, then the oldest of too many.
        """
        txn.execute(
            "SELECT id, logs_path FROM jobs WHERE time_finished IS NOT NULL AND time_finished < ? "
            "ORDER BY time_finished LIMIT ?",
            (finished_before, _PRUNE_BATCH),
        )
        victims = txn.fetchall()
        txn.executemany("DELETE FROM jobs WHERE id = ?", [(job_id,) for job_id, _ in victims])
        room = _PRUNE_BATCH - len(victims)
        if room:
            txn.execute("SELECT COUNT(*) FROM jobs")
            counted = txn.fetchone()
            assert counted is not None  # COUNT(*) always answers one row
            excess = int(counted[0]) - max_records
            if excess > 0:
                txn.execute(
                    "SELECT id, logs_path FROM jobs WHERE state IN ('SUCCESS', 'FAILED', 'ABORTED') "
                    "ORDER BY id LIMIT ?",
                    (min(excess, room),),
                )
                oldest = txn.fetchall()
                txn.executemany("DELETE FROM jobs WHERE id = ?", [(job_id,) for job_id, _ in oldest])
                victims += oldest
        return len(victims), [job_id for job_id, logs_path in victims if logs_path]


@implementer(IJobStore)
class SQLiteJobStore(SqlJobStore):
    """
    L{IJobStore} on the daemon's SQLite database.

    @param pool: the one-connection pool from L{midjobs.store.open_database};
        every write goes through it.
    @param reader: a pool on the same file for queries, or C{None} to read
        through C{pool}: C{open_database(path, connections=READERS)}, so that
        a slow query holds one reader, not all of them.  The store closes it
        when it stops.
    @param flush_interval: how long a change nobody waits for may wait.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        reactor: Any,
        *,
        reader: ConnectionPool | None = None,
        flush_interval: float = 0.2,
    ) -> None:
        super().__init__(pool, reactor, reader=reader or pool, flush_interval=flush_interval)
        #: The pool the store made for its queries, which it closes when it stops.
        self._own_reader = reader

    # Start-up.

    def last_id(self) -> Deferred[int]:
        return self._pool.runInteraction(self._last_id)

    @staticmethod
    def _last_id(txn: Cursor) -> int:
        txn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'")
        row = txn.fetchone()
        sequence = row[0] if row else 0
        txn.execute("SELECT MAX(id) FROM jobs")
        row = txn.fetchone()
        highest = (row[0] if row else None) or 0
        return max(int(sequence), int(highest))

    def abort_unfinished(self, error: str, node: str | None = None) -> Deferred[int]:
        # One daemon's store: every unfinished job is this daemon's, whatever C{node}.
        return self._pool.runInteraction(self._abort_unfinished, error, time.time(), self._logs_dir)

    @staticmethod
    def _abort_unfinished(txn: Cursor, error: str, now: float, logs_dir: Path | None) -> int:
        txn.execute("SELECT id, record FROM jobs WHERE state IN ('WAITING', 'RUNNING') ORDER BY id")
        return abort_unfinished_rows(txn, txn.fetchall(), error, now, logs_dir)

    # Writes.

    def _commit(self, rows: list[_Row], taken: int) -> Deferred[None]:
        # Outside an interaction's transaction: a batch of one statement is a transaction of its own.
        writer = cast(ConnectionPool, self._pool)  # the pool this store was made with
        return writer.runWithConnection(self._write_rows, rows, taken)  # type: ignore[no-untyped-call, no-any-return]  # adbapi is not annotated

    @staticmethod
    def _write_rows(connection: _Connection, rows: list[_Row], taken: int) -> None:
        """
        Write C{rows}, and C{taken}, in one transaction: one statement when
        it can be (most batches), which SQLite commits as it runs it; else
        C{BEGIN IMMEDIATE} and the statements, which the pool commits or
        rolls back.
        """
        # The log of a job that ended is on disk before its end is recorded.
        sync_finished_logs(rows)
        statements: list[tuple[str, Sequence[object]]] = [
            (_upsert(len(chunk)), [value for row in chunk for value in row])
            for chunk in (rows[start : start + _MAX_ROWS] for start in range(0, len(rows), _MAX_ROWS))
        ]
        if taken:
            statements += [
                (
                    "INSERT INTO sqlite_sequence (name, seq) SELECT 'jobs', 0 "
                    "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'jobs')",
                    (),
                ),
                ("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'jobs'", (taken,)),
            ]
        cursor = connection.cursor()
        if len(statements) > 1:
            cursor.execute("BEGIN IMMEDIATE")
        for sql, parameters in statements:
            cursor.execute(sql, parameters)

    # Health.

    def check_writable(self) -> Deferred[None]:
        """
        Whether the database takes writes, through the writer's connection
        (so in turn with the job records): a write transaction that changes
        the header's C{user_version} to the value it has, rolled back, so
        that a locked or read-only database fails and nothing reaches the
        disk.  After a write of job records failed (a full disk, an I/O
        error) the probe commits, and only a commit that works clears it.

        @return: fires if the database takes writes; fails with why not.
        """
        d = self._pool.runInteraction(self._probe_write, self._write_failed is not None)
        d.addCallback(self._probed)
        return d

    @staticmethod
    def _probe_write(txn: Cursor, commit: bool) -> None:
        # The writer's transaction took the write lock as it began (a locked database failed there).
        txn.execute("PRAGMA user_version")
        answer = txn.fetchone()
        assert answer is not None  # the pragma always answers one row
        (version,) = answer
        txn.execute(f"PRAGMA user_version = {int(version)}")
        if not commit:
            txn.execute("ROLLBACK")

    def stop(self) -> Deferred[None]:
        d = super().stop()
        own_reader = self._own_reader
        if own_reader is not None:
            d.addCallback(lambda _: close_database(own_reader))
        return d


def sync_finished_logs(rows: Sequence[tuple[Any, ...]]) -> None:
    """
    Flush to disk the log file of each job of C{rows} that ended: the log of
    a job is on disk before its end is recorded.  In the writer's thread.
    """
    for row in rows:
        if row[5] is not None and row[2] in _FINISHED:
            _sync_file(row[5])


def _get(txn: Cursor, job_id: int, logs_dir: Path | None) -> JobRecord | None:
    """
    The stored record of job C{job_id}, or C{None}.
    """
    txn.execute("SELECT record FROM jobs WHERE id = ?", (job_id,))
    row = txn.fetchone()
    return None if row is None else _decode(job_id, row[0], logs_dir)


@functools.lru_cache(maxsize=8)
def _delete(rows: int) -> str:
    """
    The statement that deletes C{rows} finished jobs by id.
    """
    marks = ", ".join(["?"] * rows)
    return f"DELETE FROM jobs WHERE id IN ({marks}) AND state IN ('SUCCESS', 'FAILED', 'ABORTED')"


def _matches(
    txn: _ReadCursor, residual: Predicate | None, logs_dir: Path | None, first: int = _FETCH
) -> Iterator[JobRecord]:
    """
    The records of the rows of the last query (C{id, record}) that
    C{residual} (if any) keeps; rows that are not a record are passed over.
    """
    for rows in _batches(txn, first):
        for job_id, text in rows:
            record = _decode(job_id, text, logs_dir)
            if record is not None and (residual is None or residual(record)):
                yield record


def _batches(txn: _ReadCursor, first: int = _FETCH) -> Iterator[list[Row]]:
    """
    The rows of the last query, C{first} at once, then ever more (so that a
    query that needs few rows reads few).
    """
    size = first
    while rows := txn.fetchmany(size):
        yield rows
        size = min(size * 2, _FETCH * 4)


def _record_id(record: JobRecord) -> int:
    return int(record["id"])
