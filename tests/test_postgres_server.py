"""
The private PostgreSQL server of L{postgres_server} works for what the
cluster needs of it: psycopg 3 connects as the tests' role, a pool runs
queries in Twisted's thread pool, and a LISTEN connection watched by the
reactor (an C{IReadDescriptor} on its socket, no polling) receives
notifications as they are committed, and sees the server go away.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg_pool
import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

if TYPE_CHECKING:
    from postgres_server import PostgresServer

#: The fixtures postgres_server and postgres_database.
pytest_plugins = ["postgres_server"]


@implementer(IReadDescriptor)
class Listener:
    """
    A connection in LISTEN mode, read by the reactor when its socket is
    readable: C{notifies(timeout=0)} consumes what has arrived without
    waiting, and each notification goes to C{received}.  When the server
    goes away, the read fails, the descriptor leaves the reactor, and
    C{lost} fires with the error.

    The reactor watches a duplicate of the connection's socket, closed only
    after the descriptor has left the reactor: libpq closes its own socket as
    soon as it reads the end of the connection, before C{doRead} can take it
    out of epoll (which then fails with EBADF and leaves the reactor's tables
    inconsistent), and the number could be reused by another socket meanwhile.
    """

    def __init__(self, conn: Any, received: Callable[[Any], None]) -> None:
        self.conn = conn
        self.received = received
        self.reads = 0
        self.lost: Deferred[Exception] = Deferred()
        self._fd = os.dup(conn.fileno())

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "pg-listener"

    def doRead(self) -> None:
        self.reads += 1
        try:
            for notify in self.conn.notifies(timeout=0):
                self.received(notify)
        except psycopg.OperationalError as e:
            self.stop()
            self.lost.callback(e)

    def connectionLost(self, reason: Any) -> None:
        pass

    def stop(self) -> None:
        if self._fd == -1:
            return
        reactor.removeReader(self)
        os.close(self._fd)
        self._fd = -1
        self.conn.close()


def _listen(conninfo: str, *channels: str) -> Any:
    """
    Connect and LISTEN, in a thread (connecting blocks).
    """
    conn = psycopg.connect(conninfo, autocommit=True)
    for channel in channels:
        conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
    return conn


async def _listener(server: PostgresServer, channel: str, received: Callable[[Any], None]) -> Listener:
    conn = await threads.deferToThread(_listen, server.conninfo, channel)
    listener = Listener(conn, received)
    reactor.addReader(listener)
    return listener


def _one(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """
    The one row of a query.
    """
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return tuple(row)


def _within(d: Deferred[Any], seconds: float) -> Deferred[Any]:
    timer = reactor.callLater(seconds, d.cancel)

    def done(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        return result

    return d.addBoth(done)


def test_connects_and_queries(postgres_server: PostgresServer) -> None:
    """
    The tests' role connects over TCP with its password to its own database
    on a PostgreSQL 15 server, and can create and use tables there.
    """
    with psycopg.connect(postgres_server.conninfo) as conn:
        user, db, version = _one(
            conn, "SELECT current_user, current_database(), current_setting('server_version_num')::int")
        assert (user, db) == (postgres_server.user, postgres_server.dbname)
        assert 150000 <= version < 160000
        conn.execute("CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)")
        ids = [_one(conn, "INSERT INTO t (v) VALUES (%s) RETURNING id", (v,))[0] for v in "abc"]
        assert ids == [1, 2, 3]
        assert _one(conn, "SELECT string_agg(v, '' ORDER BY id) FROM t") == ("abc",)
        conn.rollback()
    with psycopg.connect(postgres_server.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_private_server(postgres_server: PostgresServer) -> None:
    """
    The server is the private one: its data and socket directories are under
    the session's temporary directory, on its own port; a wrong password is
    refused.
    """
    assert postgres_server.port != 5432
    with psycopg.connect(postgres_server.admin_conninfo) as conn:
        data, sockets, port = _one(
            conn, "SELECT current_setting('data_directory'), current_setting('unix_socket_directories'),"
            " current_setting('port')::int")
    assert os.path.realpath(data) == os.path.realpath(postgres_server.data_dir)
    assert sockets == str(postgres_server.socket_dir)
    assert port == postgres_server.port
    assert os.path.exists(postgres_server.socket_dir / f".s.PGSQL.{postgres_server.port}")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_server.conninfo.replace(postgres_server.password, "wrong"))


def test_fresh_database(postgres_database: str) -> None:
    """
    C{postgres_database} gives an empty database of its own.
    """
    with psycopg.connect(postgres_database) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        assert _one(conn, "SELECT current_database()")[0].startswith("test_")


def test_notify_payload_limit(postgres_server: PostgresServer) -> None:
    """
    A notification's payload must be shorter than 8000 bytes (the default
    configuration): 7999 bytes pass, 8000 are refused.
    """
    with psycopg.connect(postgres_server.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_notify('limit', %s)", ("x" * 7999,))
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="payload string too long"):
            conn.execute("SELECT pg_notify('limit', %s)", ("x" * 8000,))


@pytest_twisted.ensureDeferred
async def test_notify_reaches_reactor(postgres_server: PostgresServer) -> None:
    """
    Notifications committed by a pooled connection in the thread pool arrive
    at a reactor-watched LISTEN connection, in commit order, without any
    timer; identical notifications of one transaction arrive once, distinct
    ones all arrive; nothing arrives before the commit.
    """
    got: list[tuple[str, str]] = []
    arrived: list[Deferred[None]] = []

    def received(n: Any) -> None:
        got.append((n.channel, n.payload))
        # Those called back may wait again at once: call back only those
        # waiting now.
        waiting = arrived[:]
        del arrived[:]
        for d in waiting:
            d.callback(None)

    async def until(count: int) -> None:
        while len(got) < count:
            d: Deferred[None] = Deferred()
            arrived.append(d)
            await _within(d, 10)

    listener = await _listener(postgres_server, "jobs", received)
    pool = psycopg_pool.ConnectionPool(postgres_server.conninfo, min_size=1, max_size=2, open=False)
    await threads.deferToThread(pool.open, wait=True, timeout=30)
    try:
        def notify(payloads: list[str], hold: Callable[[], None] | None = None) -> None:
            with pool.connection() as conn:
                for p in payloads:
                    conn.execute("SELECT pg_notify('jobs', %s)", (p,))
                conn.execute("SELECT pg_notify('other', 'not listened to')")
                if hold is not None:
                    hold()

        await threads.deferToThread(notify, ["1"])
        await until(1)
        assert got == [("jobs", "1")]

        # One transaction: the duplicate of "2" is folded, the order kept.
        big = "p" * 7999
        await threads.deferToThread(notify, ["2", "3", "2", big, "4"])
        await until(5)
        assert got == [("jobs", "1"), ("jobs", "2"), ("jobs", "3"), ("jobs", big), ("jobs", "4")]

        # Nothing is delivered until the sending transaction commits.
        before_commit: list[int] = []

        def count_before_commit() -> None:
            # In the sending thread, between the NOTIFY and the commit.
            before_commit.append(threads.blockingCallFromThread(reactor, _settled, got))  # type: ignore[arg-type]

        await threads.deferToThread(notify, ["5"], count_before_commit)
        assert before_commit == [5]
        await until(6)
        assert got[-1] == ("jobs", "5")
        assert listener.reads >= 3
    finally:
        listener.stop()
        await threads.deferToThread(pool.close)


def _settled(got: list[Any]) -> Deferred[int]:
    """
    How many notifications have arrived once the reactor has had a moment to
    read whatever is on its sockets.
    """
    d: Deferred[int] = Deferred()
    reactor.callLater(0.2, lambda: d.callback(len(got)))
    return d


@pytest_twisted.ensureDeferred
async def test_listener_sees_restart_and_listens_again(postgres_server: PostgresServer) -> None:
    """
    When the server restarts, the reactor-watched connection's read fails at
    once (it is not left hanging), and a new connection listens again and
    receives what is sent after.
    """
    got: list[str] = []
    listener = await _listener(postgres_server, "jobs", lambda n: got.append(n.payload))
    await threads.deferToThread(postgres_server.restart)
    error = await _within(listener.lost, 30)
    assert isinstance(error, psycopg.OperationalError)
    assert listener.fileno() == -1 and listener.conn.closed

    arrived: Deferred[None] = Deferred()

    def received(n: Any) -> None:
        got.append(n.payload)
        arrived.callback(None)

    again = await _listener(postgres_server, "jobs", received)
    try:
        def send() -> None:
            with psycopg.connect(postgres_server.conninfo, autocommit=True) as conn:
                conn.execute("NOTIFY jobs, 'after restart'")

        await threads.deferToThread(send)
        await _within(arrived, 10)
        assert got == ["after restart"]
    finally:
        again.stop()
