"""
PostgreSQL for the stores: psycopg's connection pool in a thread pool of its own.

L{PgDatabase} has the L{Pool} face of the SQLite pool (C{runInteraction},
C{runQuery}, C{runOperation} with C{?} placeholders), so the stores' SQL runs
on either engine.  Every statement runs in a thread of a Twisted
L{ThreadPool} that only the database uses: the reactor's pool runs jobs, and
a burst of thread jobs must not hold back the commits they wait for.  Each
interaction checks a connection out of a C{psycopg_pool.ConnectionPool} and
runs in one transaction, committed when it returns, or (L{runStatements},
and so L{runQuery} and L{runOperation}) in autocommit, each statement its
own transaction: one round trip where C{BEGIN} and C{COMMIT} would make
three.  A connection is checked at checkout without a round trip (see
L{_check_idle}).  Statements go through psycopg's raw cursors, numbered
C{$1}, C{$2} from the stores' C{?} once (L{pg_sql}), never parsed again.

The engine's exceptions leave as those of L{midjobs.store.errors}:
C{Conflict}, C{MissingReference} and C{Unavailable}.
"""

from __future__ import annotations

import enum
import functools
import select
from typing import Any, Callable, Concatenate, ParamSpec, Sequence, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ..logs import logger
from .database import Cursor, Row
from .errors import Conflict, MissingReference, Unavailable
from .pg_schema import PARTS, migrate_part, versions

__all__ = ["PgDatabase", "pg_sql", "safe_url"]

log = logger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: SQLSTATEs of a server that is going away or not yet there (besides class
#: 08, connection exceptions): admin_shutdown, crash_shutdown, cannot_connect_now.
_GOING_AWAY = frozenset({"57P01", "57P02", "57P03"})


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """
    C{sql} with its C{?} placeholders numbered as PostgreSQL's own (C{$1},
    C{$2}, ...), for psycopg's raw cursors, which send a statement as it is
    instead of parsing it for C{%s} each time it runs (psycopg caches that
    parse only for statements of at most 50 parameters: a batch of rows has
    more).  The stores' SQL has no literal C{?}.
    """
    first, *rest = sql.split("?")
    return first + "".join(f"${number}{text}" for number, text in enumerate(rest, 1))


def safe_url(conninfo: str) -> str:
    """
    C{conninfo} (a C{postgresql://} URL or a libpq string) as
    C{postgresql://user@host:port/dbname}: what a log line may show, never
    the password.

    @raise ValueError: C{conninfo} is not a connection string.
    """
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        # Its message may quote the string, password and all.
        raise ValueError("The database URL is not a PostgreSQL connection string") from None
    user = params.get("user")
    host = params.get("host") or params.get("hostaddr") or ""
    port = params.get("port")
    where = f"{host}:{port}" if port else str(host)
    return f"postgresql://{f'{user}@' if user else ''}{where}/{params.get('dbname') or ''}"


def store_error(error: psycopg.Error, where: str) -> Exception | None:
    """
    The L{midjobs.store.errors} exception C{error} stands for, or C{None}
    if it stands for none of them (a bug in a statement, a timeout).

    @param where: the database, as L{safe_url} shows it.
    """
    if isinstance(error, pg_errors.UniqueViolation):
        return Conflict(str(error))
    if isinstance(error, pg_errors.ForeignKeyViolation):
        return MissingReference(str(error))
    if isinstance(error, PoolTimeout):
        return Unavailable(f"No connection to the database {where} came free in time")
    if isinstance(error, psycopg.OperationalError):
        state = error.sqlstate
        if state is None or state.startswith("08") or state in _GOING_AWAY:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return Unavailable(f"The database {where} is unavailable: {reason}")
    return None


def _check_idle(conn: psycopg.Connection[Row]) -> None:
    """
    The pool's check of a connection it is about to hand out: a round trip
    only if the server said something since the connection went idle.

    An idle connection hears nothing, unless the server is going away: it
    sends its error (an administrator's shutdown, a terminated backend)
    and closes, and the socket becomes readable.  Only then does
    C{ConnectionPool.check_connection} run its query (and fail, so the pool
    replaces the connection); a quiet connection costs no round trip.

    @raise psycopg.Error: the connection is broken.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


class _Way(enum.Enum):
    """
    How an interaction runs.

    @cvar TRANSACTION: in one transaction, committed when it returns.
    @cvar SCAN: likewise, its query read through a server-side cursor.
    @cvar STATEMENTS: in autocommit, each statement a transaction of its own.
    """

    TRANSACTION = "transaction"
    SCAN = "scan"
    STATEMENTS = "statements"


class _Cursor:
    """
    A psycopg cursor with the L{Cursor} face the stores use: C{?}
    placeholders, and the store's exceptions for the engine's.
    """

    def __init__(self, cursor: psycopg.Cursor[Row] | psycopg.ServerCursor[Row], where: str) -> None:
        self._cursor = cursor
        self._where = where

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def execute(self, sql: str, parameters: Sequence[object] | None = None, /) -> object:
        try:
            if parameters is None:
                # Nothing to number: the statement goes as it is.
                self._cursor.execute(sql)
            else:
                self._cursor.execute(pg_sql(sql), parameters)
        except psycopg.Error as e:
            self._raise(e)
        return self

    def executemany(self, sql: str, parameters: Sequence[Sequence[object]], /) -> object:
        try:
            self._cursor.executemany(pg_sql(sql), parameters)
        except psycopg.Error as e:
            self._raise(e)
        return self

    def _raise(self, error: psycopg.Error) -> None:
        translated = store_error(error, self._where)
        if translated is None:
            raise error
        raise translated from error

    def fetchone(self) -> Row | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Row]:
        return self._cursor.fetchall()

    def fetchmany(self, size: int = 0, /) -> list[Row]:
        return self._cursor.fetchmany(size)


class PgDatabase:
    """
    A PostgreSQL database: the L{Pool} of the stores, on
    C{psycopg_pool.ConnectionPool} in a L{ThreadPool} of its own.

    Call L{open} before anything else and L{close} at the end (the reactor's
    shutdown closes it too).  Interactions run in one transaction each,
    committed when they return, rolled back when they raise.

    @ivar conninfo: the URL (or libpq string) it was given, for code that
        opens a connection of its own (a LISTEN connection).  It may hold a
        password: never log it, log L{safe_url}.
    @ivar safe_url: the database as a log line may show it (no password).
    """

    def __init__(
        self,
        url: str,
        reactor: Any,
        *,
        size: int = 8,
        application_name: str = "midjobs",
        timeout: float = 5.0,
        statement_timeout: float = 30.0,
    ) -> None:
        """
        @param url: a C{postgresql://} URL or a libpq connection string.
        @param size: the most connections (and threads) in use at once.
        @param application_name: how the server's C{pg_stat_activity} names
            these connections.
        @param timeout: the longest an interaction waits for a connection
            before it fails with C{Unavailable}.
        @param statement_timeout: the longest one statement may run, in seconds.
        """
        if size < 1:
            raise ValueError(f"a database pool needs at least one connection, not {size}")
        self.conninfo = url
        self.safe_url = safe_url(url)
        self._reactor = reactor
        self._threads = ThreadPool(minthreads=0, maxthreads=size, name="midjobs-pg")
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            url,
            min_size=min(2, size),
            max_size=size,
            open=False,
            timeout=timeout,
            name="midjobs-pg",
            kwargs={
                "autocommit": False,
                "application_name": application_name,
                "options": f"-c statement_timeout={int(statement_timeout * 1000)}",
            },
            check=_check_idle,
            reconnect_failed=self._reconnect_failed,
        )
        self._timeout = timeout
        self._shutdown: Any = None
        self._closing: Deferred[None] | None = None

    def _reconnect_failed(self, pool: Any) -> None:
        log.warn("Could not reconnect to the database {url}; will try again when a connection is needed",
                 url=self.safe_url)

    def open(self) -> Deferred[None]:
        """
        Start the threads and connect; fire once the pool has its first
        connections, or fail with C{Unavailable} (and close) if the server
        cannot be reached or refuses the connection.
        """
        self._threads.start()
        self._shutdown = self._reactor.addSystemEventTrigger("during", "shutdown", self.close)
        d = deferToThreadPool(self._reactor, self._threads, self._open)

        def failed(failure: Failure) -> Deferred[None]:
            closed = self.close()
            closed.addBoth(lambda _: failure)
            return closed

        d.addErrback(failed)
        return d

    def _open(self) -> None:
        try:
            # One connection first: a server that is down or refuses us says
            # why at once (the pool would only time out).
            psycopg.connect(self.conninfo, connect_timeout=max(int(self._timeout), 2)).close()
            self._pool.open(wait=True, timeout=self._timeout * 3)
        except psycopg.Error as e:
            translated = store_error(e, self.safe_url)
            if translated is None:
                raise
            raise translated from e

    def close(self) -> Deferred[None]:
        """
        Close the connections (waiting briefly for those in use) and stop the threads.
        """
        if self._closing is not None:
            return self._closing
        if self._shutdown is not None:
            try:
                self._reactor.removeSystemEventTrigger(self._shutdown)
            except (ValueError, KeyError):
                pass  # Called by that trigger: it is gone already.
            self._shutdown = None
        if not self._threads.started:
            self._closing = succeed(None)
            return self._closing
        d = deferToThreadPool(self._reactor, self._threads, self._pool.close, 5.0)

        def stop(result: object) -> object:
            self._threads.stop()
            return result

        d.addBoth(stop)
        self._closing = d
        return d

    def _transact(
        self, way: _Way, interaction: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _T:
        try:
            with self._pool.connection() as conn:
                # Set at each checkout: a connection never keeps the last interaction's way.
                autocommit = way is _Way.STATEMENTS
                if conn.autocommit is not autocommit:
                    conn.autocommit = autocommit
                cursor: psycopg.Cursor[Row] | psycopg.ServerCursor[Row] = (
                    psycopg.RawServerCursor(conn, "midjobs_scan") if way is _Way.SCAN else psycopg.RawCursor(conn)
                )
                with cursor:
                    return interaction(_Cursor(cursor, self.safe_url), *args, **kwargs)
        except psycopg.Error as e:
            translated = store_error(e, self.safe_url)
            if translated is None:
                raise
            raise translated from e

    def _run(self, way: _Way, interaction: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._threads, self._transact, way, interaction, args, kwargs)

    def runInteraction(
        self,
        interaction: Callable[Concatenate[Cursor, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        """
        Call C{interaction} with a cursor in one transaction, in the
        database's threads; fire with its result once committed.
        """
        return self._run(_Way.TRANSACTION, interaction, args, kwargs)

    def runStatements(
        self,
        interaction: Callable[Concatenate[Cursor, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        """
        Call C{interaction} with a cursor outside any transaction block (in
        autocommit): each statement it runs is a transaction of its own,
        committed (durable) when it returns.  For an interaction of one
        statement: one round trip to the server instead of three (C{BEGIN},
        the statement, C{COMMIT}).
        """
        return self._run(_Way.STATEMENTS, interaction, args, kwargs)

    def runScan(
        self,
        interaction: Callable[Concatenate[Cursor, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        """
        L{runInteraction} with a server-side cursor, for one query whose rows
        are read a block at a time (C{fetchmany}): the server sends the rows
        as they are asked for, so a scan that stops early reads few, and a
        large answer never sits in memory whole.
        """
        return self._run(_Way.SCAN, interaction, args, kwargs)

    def ensure_schema(self, name: str) -> Deferred[int]:
        """
        Bring the schema part C{name} (of L{PARTS}) up to date, in one
        transaction serialised with every other migration of the database;
        fire with how many statements ran.  What L{ensure_schema
        <midjobs.store.database.ensure_schema>} calls for this database.

        @raise RuntimeError: (in the Deferred) the database is newer than this code.
        """
        return self.runInteraction(migrate_part, name)

    def migrate(self) -> Deferred[dict[str, int]]:
        """
        Bring every part up to date, in the order of L{PARTS}; fire with how
        many statements ran for each.
        """
        return Deferred.fromCoroutine(self._migrate())

    async def _migrate(self) -> dict[str, int]:
        return {name: await self.ensure_schema(name) for name in PARTS}

    def versions(self) -> Deferred[dict[str, tuple[int, int]]]:
        """
        Fire with each part's version in the database and in this code.
        """
        return self.runInteraction(versions)

    def runQuery(self, sql: str, parameters: Sequence[object] | None = None, /) -> Deferred[list[Row]]:
        """
        Fire with the rows of one query (a transaction of its own: L{runStatements}).
        """
        return self.runStatements(_query, sql, parameters)

    def runOperation(self, sql: str, parameters: Sequence[object] | None = None, /) -> Deferred[None]:
        """
        Run one statement that returns no rows (a transaction of its own: L{runStatements}).
        """
        return self.runStatements(_operation, sql, parameters)


def _query(txn: Cursor, sql: str, parameters: Sequence[object] | None) -> list[Row]:
    if parameters is None:
        txn.execute(sql)
    else:
        txn.execute(sql, parameters)
    return txn.fetchall()


def _operation(txn: Cursor, sql: str, parameters: Sequence[object] | None) -> None:
    if parameters is None:
        txn.execute(sql)
    else:
        txn.execute(sql, parameters)
