"""
A cluster's configuration backup: its catalogue and job history, copied
from PostgreSQL into the SQLite database a backup holds.

A node of a cluster keeps its users, API keys and job records in the shared
PostgreSQL database, not in its own C{midjobs.db}.  L{copy_catalogue} makes
of them the database a single daemon's backup holds (L{midjobs.store.backup}):
a new SQLite file, built by L{ensure_schema} with the very statements the
embedded daemon runs, into which the rows of L{BACKED_UP} are copied as one
snapshot.  A cluster's backup thus restores on a single daemon on SQLite.

What only a cluster has (the nodes, the locks, the tokens, the copies of
the job logs) is left out, as is the node's webhook outbox.  The columns
copied are those of the SQLite tables; PostgreSQL's own (a job's C{node},
its place in its lock's queue) are left behind.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Callable, Mapping, Sequence

import attrs

from .backup import fsync_file
from .database import Cursor, Pool, close_database, ensure_schema, open_database

__all__ = ["BACKED_UP", "CopyProgress", "CopiedPart", "copy_catalogue"]

#: Called with the rows copied so far and the rows to copy in all; it may
#: raise to stop (an abort), and the copy is then rolled back.
CopyProgress = Callable[[int, int], None]

#: Rows read from PostgreSQL, and written to SQLite, at once.
_BATCH = 500


@attrs.frozen
class CopiedPart:
    """
    A part of the schema whose table a cluster's backup holds.

    @ivar name: the part's name, in both engines' C{schema_version}.
    @ivar table: its table, of the same name in both engines.
    @ivar sequence: an SQL expression for the PostgreSQL sequence that gives
        the table's ids: the backup's C{sqlite_sequence} continues from it,
        so that a restored daemon never gives again the id of a row deleted
        before the backup.
    """

    name: str
    table: str
    sequence: str


#: What a cluster's backup holds, in the order it is copied: a key refers
#: to its user.
BACKED_UP = (
    CopiedPart("users", "users", "pg_get_serial_sequence('users', 'id')"),
    CopiedPart("api_keys", "api_keys", "pg_get_serial_sequence('api_keys', 'id')"),
    CopiedPart("jobs", "jobs", "'job_ids'"),
)


async def copy_catalogue(
    database: Pool,
    target: Path,
    schemas: Mapping[str, Sequence[str]],
    *,
    progress: CopyProgress | None = None,
) -> int:
    """
    Make the new SQLite database C{target} a copy of the catalogue and the
    job history of the PostgreSQL C{database}: the tables of L{BACKED_UP},
    as one repeatable-read transaction sees them.  Call it on the reactor
    (a thread job through C{blockingCallFromThread}): no SQL runs there.

    The file is created with L{ensure_schema} and C{schemas}, then filled
    in one transaction of its own; it uses a rollback journal (whole
    without a C{-wal} beside it), is private to its owner and is fsynced.
    Rows are read in batches through a server-side cursor in C{database}'s
    threads: memory stays bounded and the reactor never waits.

    @param schemas: the SQLite statements of each part of L{BACKED_UP}, by
        name, as the embedded daemon's stores keep them.
    @param progress: told the rows copied so far after each batch.
    @return: how many rows were copied.
    @raise KeyError: C{schemas} lacks a part of L{BACKED_UP}.
    """
    statements = {part.name: tuple(schemas[part.name]) for part in BACKED_UP}
    sqlite = open_database(str(target))
    try:
        for name, part_statements in statements.items():
            await ensure_schema(sqlite, name, part_statements)
    finally:
        await close_database(sqlite)
    copied: int = await database.runInteraction(_copy, target, progress)
    return copied


def _copy(txn: Cursor, target: Path, progress: CopyProgress | None) -> int:
    """
    In a new PostgreSQL transaction, copy the rows of L{BACKED_UP} into the
    SQLite file C{target}, which has their tables and no rows.
    """
    # Every table as of one moment: no key without its user.
    txn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    total = 0
    for part in BACKED_UP:
        txn.execute(f"SELECT count(*) FROM {part.table}")
        row = txn.fetchone()
        total += int(row[0]) if row is not None else 0
    done = 0
    if progress is not None:
        progress(done, total)
    with contextlib.closing(sqlite3.connect(target, isolation_level=None)) as copy:
        copy.execute("PRAGMA journal_mode = DELETE")
        copy.execute("BEGIN IMMEDIATE")
        for part in BACKED_UP:
            done = _copy_table(txn, copy, part, done, total, progress)
        copy.execute("COMMIT")
    os.chmod(target, 0o600)
    fsync_file(target)
    return done


def _copy_table(
    txn: Cursor, copy: sqlite3.Connection, part: CopiedPart, done: int, total: int, progress: CopyProgress | None
) -> int:
    """
    Copy the rows of C{part}'s table, in the columns SQLite's table has,
    and carry its id sequence over; return the rows copied in all so far.
    """
    columns = [name for (_, name, *_) in copy.execute(f"PRAGMA table_info({part.table})")]
    names = ", ".join(f'"{column}"' for column in columns)
    insert = f"INSERT INTO {part.table} ({names}) VALUES ({', '.join('?' * len(columns))})"
    txn.execute(f"DECLARE backup_rows NO SCROLL CURSOR FOR SELECT {names} FROM {part.table} ORDER BY id")
    while True:
        txn.execute(f"FETCH {_BATCH} FROM backup_rows")
        rows = txn.fetchall()
        if not rows:
            break
        copy.executemany(insert, rows)
        done += len(rows)
        if progress is not None:
            progress(done, total)
    txn.execute("CLOSE backup_rows")
    # pg_sequences' last_value is NULL for a sequence that never gave an id.
    txn.execute(
        "SELECT last_value FROM pg_sequences "
        f"WHERE format('%I.%I', schemaname, sequencename)::regclass = ({part.sequence})::regclass"
    )
    row = txn.fetchone()
    if row is not None and row[0] is not None:
        # Inserting ids set the sequence to the highest copied; never lower it.
        copy.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT ?, 0 "
            "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?)",
            (part.table, part.table),
        )
        copy.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (int(row[0]), part.table))
    return done
