"""
Open the daemon's SQLite database and migrate its schema.

The pool that writes has one connection in one thread: SQLite allows one
writer at a time, so serialising every statement in that thread costs nothing
and rules out C{SQLITE_BUSY} between our own connections.  Its transactions
are explicit: each interaction is one, begun with C{BEGIN IMMEDIATE} (what it
reads, no other process changes before it commits), and a statement run
outside any (C{runQuery}, C{runOperation}, the job history's batches through
L{ConnectionPool.runWithConnection}) is a transaction of its own, which
SQLite commits without a C{BEGIN} and a C{COMMIT}: a query takes no write
lock.  A pool that only reads may have several connections (in
WAL mode readers never wait for each other or for the writer), so that one
long query does not hold back the others.  Nothing here touches SQLite on the
reactor thread.

The pools' transactions raise L{midjobs.store.errors}' exceptions for
violated constraints, as L{midjobs.store.pg}'s do on PostgreSQL, so the
stores' SQL and its callers are the same for both engines.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from typing import Any, Callable, Concatenate, ParamSpec, Protocol, Sequence, TypeVar, runtime_checkable

from twisted.enterprise.adbapi import ConnectionPool, Transaction
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorCore
from twisted.internet.threads import deferToThreadPool
from ..logs import logger
from .errors import Conflict, MissingReference, NewerSchema

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_MS",
    "Cursor",
    "Pool",
    "Row",
    "SchemaOwner",
    "apply_part",
    "close_database",
    "ensure_schema",
    "open_database",
]

log = logger(__name__)

#: How long a statement waits for a lock held by another process.
DEFAULT_BUSY_TIMEOUT_MS = 5000

_SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    applied REAL NOT NULL
)
"""

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: A row as SQLite returns it.  Its values come from outside the program, like
#: JSON's: each reader says what it expects of its own columns.
Row = tuple[Any, ...]


class Cursor(Protocol):
    """
    The DB-API cursor methods an interaction uses on its transaction
    (adbapi's C{Transaction} passes them on to the connection's cursor).
    """

    @property
    def rowcount(self) -> int:
        """
        How many rows the last statement changed.
        """

    def execute(self, sql: str, parameters: Sequence[object] = ..., /) -> object:
        """
        Run one statement with its C{?} parameters.
        """

    def executemany(self, sql: str, parameters: Sequence[Sequence[object]], /) -> object:
        """
        Run one statement once for each parameter sequence.
        """

    def fetchone(self) -> Row | None:
        """
        The next row of the last query, or C{None} at its end.
        """

    def fetchall(self) -> list[Row]:
        """
        The remaining rows of the last query.
        """


class Pool(Protocol):
    """
    The typed face of a L{ConnectionPool} (whose own methods are not
    annotated): what the stores call on their database.
    """

    def runInteraction(
        self,
        interaction: Callable[Concatenate[Cursor, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        """
        Call C{interaction} with a cursor in one transaction, in the pool's
        thread; fire with its result once committed.
        """

    def runQuery(self, sql: str, parameters: Sequence[object] = ..., /) -> Deferred[list[Row]]:
        """
        Fire with the rows of one query.
        """

    def runOperation(self, sql: str, parameters: Sequence[object] = ..., /) -> Deferred[None]:
        """
        Run one statement that returns no rows.
        """


@runtime_checkable
class SchemaOwner(Protocol):
    """
    A database whose engine keeps its own statements for each schema part
    (PostgreSQL's are in L{midjobs.store.pg_schema}): L{ensure_schema} hands
    it the part's name instead of running the SQLite statements.
    """

    def ensure_schema(self, name: str) -> Deferred[int]:
        """
        Bring the schema part C{name} up to date; fire with how many
        statements ran.
        """


class _Transaction(Transaction):
    """
    adbapi's transaction, raising the store's exceptions
    (L{midjobs.store.errors}) for SQLite's constraint violations.
    """

    def execute(self, sql: str, parameters: Sequence[object] = (), /) -> object:
        try:
            return self._cursor.execute(sql, parameters)  # type: ignore[union-attr]  # open while the transaction runs
        except sqlite3.IntegrityError as e:
            raise _integrity_error(e) from e

    def executemany(self, sql: str, parameters: Sequence[Sequence[object]], /) -> object:
        try:
            return self._cursor.executemany(sql, parameters)  # type: ignore[union-attr]  # idem
        except sqlite3.IntegrityError as e:
            raise _integrity_error(e) from e


class _SQLiteConflict(Conflict, sqlite3.IntegrityError):
    """
    SQLite's unique violation: a L{Conflict}, and still the
    C{sqlite3.IntegrityError} that code written for SQLite alone catches.
    """


class _SQLiteMissingReference(MissingReference, sqlite3.IntegrityError):
    """
    SQLite's foreign key violation: a L{MissingReference}, and still the
    C{sqlite3.IntegrityError} that code written for SQLite alone catches.
    """


def _integrity_error(error: sqlite3.IntegrityError) -> Exception:
    """
    The store's exception for a violated constraint, or C{error} itself for
    those it has none for (C{NOT NULL}, C{CHECK}: bugs in a statement).
    """
    message = str(error)
    if message.startswith("UNIQUE constraint failed"):
        return _SQLiteConflict(message)
    if message.startswith("FOREIGN KEY constraint failed"):
        return _SQLiteMissingReference(message)
    return error


class _WriteTransaction(_Transaction):
    """
    A transaction of the writer's pool, whose connection commits each
    statement on its own unless told otherwise: it holds the write lock
    from its start (adbapi commits it at the interaction's end, or rolls
    it back).
    """

    def __init__(self, pool: ConnectionPool, connection: object) -> None:
        super().__init__(pool, connection)  # type: ignore[no-untyped-call]  # adbapi is not annotated
        self.execute("BEGIN IMMEDIATE")


class _SQLitePool(ConnectionPool):
    """
    adbapi's pool, whose transactions raise the store's exceptions.
    """

    transactionFactory = _Transaction


class _SQLiteWriterPool(_SQLitePool):
    """
    The pool that writes: its interactions are explicit transactions, and
    its lone statements (L{runQuery}, L{runOperation}) are not, as on
    PostgreSQL: SQLite runs each on its own, so a query reads beside another
    process's write transaction instead of waiting for the write lock.
    """

    transactionFactory = _WriteTransaction

    def runQuery(self, sql: str, parameters: Sequence[object] = (), /) -> Deferred[list[Row]]:
        return self.runWithConnection(self._run_alone, sql, parameters, True)  # type: ignore[no-any-return, no-untyped-call]  # adbapi is not annotated

    def runOperation(self, sql: str, parameters: Sequence[object] = (), /) -> Deferred[None]:
        return self.runWithConnection(self._run_alone, sql, parameters, False)  # type: ignore[no-any-return, no-untyped-call]  # idem

    def _run_alone(self, connection: object, sql: str, parameters: Sequence[object], rows: bool) -> list[Row] | None:
        """
        Run one statement outside any transaction (through the readers'
        kind, which begins none): SQLite commits it as it runs.
        """
        statement = _Transaction(self, connection)  # type: ignore[no-untyped-call]  # adbapi is not annotated
        try:
            statement.execute(sql, parameters)
            return statement.fetchall() if rows else None
        finally:
            statement.close()  # type: ignore[no-untyped-call]  # idem


def _configure_connection(connection: sqlite3.Connection, busy_timeout_ms: int, path: str) -> None:
    """
    Set the pragmas every connection needs; adbapi calls this after each connect.
    """
    connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode.lower() != "wal":
        # An in-memory database cannot use WAL; anything else is worth knowing.
        log.info("database {path} uses journal mode {mode}", path=path, mode=mode)
    connection.execute("PRAGMA foreign_keys = ON")


def open_database(
    path: str,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    reactor: IReactorCore | None = None,
    connections: int = 1,
    reads_only: bool = False,
) -> ConnectionPool:
    """
    A pool on the SQLite database at C{path} (created if missing).

    Connections use WAL journaling, enforce foreign keys and wait up to
    C{busy_timeout_ms} for locks.  The pool starts with the reactor; stop it
    with L{close_database}.

    @param connections: how many connections (each in its own thread) the
        pool has.  Only a pool that never writes may have more than one.
    @param reads_only: a pool for queries alone (any pool of more than one
        connection is): its interactions take no write lock.
    """
    if connections < 1:
        raise ValueError(f"a pool needs at least one connection, not {connections}")
    writer = connections == 1 and not reads_only
    pool_type = _SQLiteWriterPool if writer else _SQLitePool
    pool: ConnectionPool = pool_type(  # type: ignore[no-untyped-call]  # adbapi is not annotated
        "sqlite3",
        path,
        check_same_thread=False,
        # The writer's transactions are explicit (_WriteTransaction); a reader's never write.
        isolation_level=None if writer else "",
        cp_min=1,
        cp_max=connections,
        cp_noisy=False,
        cp_openfun=functools.partial(
            _configure_connection, busy_timeout_ms=busy_timeout_ms, path=path
        ),
        cp_reactor=reactor,
    )
    return pool


def close_database(pool: ConnectionPool) -> Deferred[None]:
    """
    Close one of the pool's connections in its own thread, then stop the
    pool, which closes any others.
    """
    if not pool.running:
        pool.close()  # type: ignore[no-untyped-call]  # adbapi is not annotated
        return succeed(None)

    def close_connection() -> None:
        thread = pool.threadID()  # type: ignore[no-untyped-call]  # adbapi is not annotated
        connection = pool.connections.pop(thread, None)
        if connection is not None:
            connection.close()

    def stop(result: object) -> object:
        pool.close()  # type: ignore[no-untyped-call]  # adbapi is not annotated
        return result

    # The pool keeps the reactor it was built with; the result is delivered there.
    d: Deferred[None] = deferToThreadPool(pool._reactor, pool.threadpool, close_connection)
    d.addBoth(stop)
    return d


def apply_part(txn: Cursor, name: str, statements: Sequence[str]) -> int:
    """
    In a transaction that holds the database's migration lock and has a
    C{schema_version} table: run the statements of part C{name} its version
    has not seen, and record the new version.  Fire with how many ran.

    @raise NewerSchema: the database is at a version newer than C{statements}.
    """
    txn.execute("SELECT version FROM schema_version WHERE name = ?", (name,))
    row = txn.fetchone()
    version = row[0] if row else 0
    if version > len(statements):
        raise NewerSchema(
            f"schema {name!r} is at version {version}, newer than this code ({len(statements)}): upgrade midjobs"
        )
    pending = statements[version:]
    for statement in pending:
        txn.execute(statement)
    if pending:
        txn.execute(
            "INSERT INTO schema_version (name, version, applied) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET version = excluded.version, applied = excluded.applied",
            (name, len(statements), time.time()),
        )
    return len(pending)


def ensure_schema(pool: Pool, name: str, statements: Sequence[str]) -> Deferred[int]:
    """
    Bring the schema part C{name} up to date; fire with how many statements ran.

    C{statements} is the part's whole history, one SQL statement per item:
    only ever append to it.  The table C{schema_version} records how many of
    them a database has seen, and the missing ones run in one transaction.
    A database of another engine (a L{SchemaOwner}) runs its own statements
    for the part instead.
    """
    if isinstance(pool, SchemaOwner):
        return pool.ensure_schema(name)
    if isinstance(pool, _SQLitePool) and not isinstance(pool, _SQLiteWriterPool):
        # Its statements would commit one by one, with no migration lock.
        return fail(ValueError("a schema is migrated through the writer's pool, not a reader's"))
    # The versions' table first, in a transaction of its own: it stays if a
    # part's statements fail.  The part's transaction holds the write lock
    # before it reads the version, so two processes cannot both apply them.
    created = pool.runOperation(_SCHEMA_VERSION_TABLE)
    return created.addCallback(lambda _: pool.runInteraction(apply_part, name, tuple(statements)))

