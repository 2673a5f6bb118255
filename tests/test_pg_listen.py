"""
L{PgListener} against the private PostgreSQL server: notifications reach
their handlers on the reactor thread in order and without any timer; the
session's own commands (L{PgListener.run}) run while notifications keep
coming; when the session is lost (server restarted or stopped, backend
terminated) the listener connects again with its backoff, listens again and
says so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from midjobs.store.pg_listen import (
    FIRST_DELAY,
    LONGEST_DELAY,
    ListenerState,
    NotListening,
    PgListener,
    reconnect_delays,
)

if TYPE_CHECKING:
    from postgres_server import PostgresServer

#: The fixtures postgres_server and postgres_database.
pytest_plugins = ["postgres_server"]

#: How long a test waits for what must happen.
TIMEOUT = 30.0


def _within(d: Deferred[Any], seconds: float = TIMEOUT) -> Deferred[Any]:
    timer = reactor.callLater(seconds, d.cancel)

    def done(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        return result

    return d.addBoth(done)


class Inbox:
    """
    What a channel's handler received, with a wait for the next ones; it
    records the thread each arrived on.
    """

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.threads: set[int] = set()
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def __call__(self, payload: str) -> None:
        self.payloads.append(payload)
        self.threads.add(threading.get_ident())
        ready = [d for count, d in self._waiting if len(self.payloads) >= count]
        self._waiting = [(count, d) for count, d in self._waiting if len(self.payloads) < count]
        for d in ready:
            d.callback(None)

    async def until(self, count: int) -> list[str]:
        if len(self.payloads) < count:
            d: Deferred[None] = Deferred()
            self._waiting.append((count, d))
            await _within(d)
        return self.payloads


class Signals:
    """
    The listener's losses and reconnections, as Deferreds to wait for.
    """

    def __init__(self, listener: PgListener) -> None:
        self.lost: list[Failure] = []
        self.reconnected = 0
        self._next_lost: Deferred[None] = Deferred()
        self._next_reconnect: Deferred[None] = Deferred()
        listener.on_lost(self._on_lost)
        listener.on_reconnect(self._on_reconnect)

    def _on_lost(self, reason: Failure) -> None:
        self.lost.append(reason)
        d, self._next_lost = self._next_lost, Deferred()
        d.callback(None)

    def _on_reconnect(self) -> None:
        self.reconnected += 1
        d, self._next_reconnect = self._next_reconnect, Deferred()
        d.callback(None)

    def next_lost(self) -> Deferred[None]:
        return _within(self._next_lost)

    def next_reconnect(self) -> Deferred[None]:
        return _within(self._next_reconnect)


def _notify(url: str, channel: str, payloads: list[str], *, one_transaction: bool = False) -> None:
    """
    Send notifications from another session (in a thread).
    """
    with psycopg.connect(url, autocommit=not one_transaction) as conn:
        for payload in payloads:
            conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


def _send(url: str, channel: str, payloads: list[str], **kw: bool) -> Deferred[None]:
    return threads.deferToThread(_notify, url, channel, payloads, **kw)


def _backend_pid(conn: psycopg.Connection[Any]) -> int:
    return conn.info.backend_pid


def _terminate(admin_conninfo: str, pid: int) -> bool:
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    assert row is not None
    return bool(row[0])


@pytest_twisted.async_yield_fixture
async def listener(postgres_database: str) -> Any:
    listener = PgListener(postgres_database, reactor, application_name="midjobs test listener")
    yield listener
    await listener.stop()
    assert listener.state is ListenerState.STOPPED
    assert listener not in reactor.getReaders()


def _listener_timers(listener: PgListener) -> list[Any]:
    """
    The reactor's pending timers that belong to C{listener}.
    """
    return [call for call in reactor.getDelayedCalls() if getattr(call.func, "__self__", None) is listener]


@pytest_twisted.ensureDeferred
async def test_notifications_reach_handlers_in_order(listener: PgListener, postgres_database: str) -> None:
    """
    Each channel's notifications reach its handler on the reactor thread, in
    commit order, those of one transaction too; a channel listened to before
    C{start} and one after both work; an unlistened channel is heard no
    more.  Nothing is timed while idle: the socket is watched, not polled.
    """
    jobs, locks = Inbox(), Inbox()
    await listener.listen("midjobs_jobs", jobs)
    assert listener.state is ListenerState.STOPPED
    await listener.start()
    assert listener.state is ListenerState.LISTENING
    await listener.listen("midjobs_locks", locks)
    assert listener in reactor.getReaders()
    assert _listener_timers(listener) == []

    await _send(postgres_database, "midjobs_jobs", [str(i) for i in range(50)])
    await _send(postgres_database, "midjobs_locks", ["lock a"])
    await _send(postgres_database, "midjobs_jobs", [f"t{i}" for i in range(20)], one_transaction=True)
    assert await jobs.until(70) == [str(i) for i in range(50)] + [f"t{i}" for i in range(20)]
    assert await locks.until(1) == ["lock a"]
    assert jobs.threads == locks.threads == {threading.get_ident()}
    assert _listener_timers(listener) == []

    await listener.unlisten("midjobs_locks")
    await _send(postgres_database, "midjobs_locks", ["unheard"])
    await _send(postgres_database, "midjobs_jobs", ["after"])
    await jobs.until(71)
    assert locks.payloads == ["lock a"]


@pytest_twisted.ensureDeferred
async def test_a_failing_handler_does_not_stop_the_others(listener: PgListener, postgres_database: str) -> None:
    """
    A handler that raises is logged; the next notifications are handled.
    """
    got = Inbox()

    def handler(payload: str) -> None:
        got(payload)
        if payload == "bad":
            raise ValueError("handler failed")

    logged: list[dict[str, Any]] = []
    observer = logged.append
    await listener.listen("c", handler)
    await listener.start()
    globalLogPublisher.addObserver(observer)
    try:
        await _send(postgres_database, "c", ["bad", "good"])
        assert await got.until(2) == ["bad", "good"]
    finally:
        globalLogPublisher.removeObserver(observer)
    assert listener.state is ListenerState.LISTENING
    failures = [event["log_failure"] for event in logged if "log_failure" in event]
    assert [f.getErrorMessage() for f in failures] == ["handler failed"]


@pytest_twisted.ensureDeferred
async def test_run_while_notifications_arrive(listener: PgListener, postgres_database: str) -> None:
    """
    Commands on the listener's own session run while another session keeps
    notifying: every notification still arrives once, in order, and a
    session advisory lock taken through C{run} belongs to that session.
    """
    got = Inbox()
    await listener.listen("c", got)
    await listener.start()
    count = 300
    sending = _send(postgres_database, "c", [str(i) for i in range(count)])
    pids = set()
    while not sending.called:
        pids.add(await listener.run(_backend_pid))
    await sending
    assert await got.until(count) == [str(i) for i in range(count)]
    assert len(pids) == 1

    def lock(conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(42)").fetchone()
        assert row is not None
        return bool(row[0])

    def lock_elsewhere() -> bool:
        with psycopg.connect(postgres_database, autocommit=True) as conn:
            return lock(conn)

    assert await listener.run(lock)
    assert not await threads.deferToThread(lock_elsewhere)

    # A failing command fails its caller only.
    def bad(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT no_such_column FROM no_such_table")

    with pytest.raises(psycopg.errors.UndefinedTable):
        await listener.run(bad)
    assert listener.state is ListenerState.LISTENING
    await _send(postgres_database, "c", ["last"])
    assert (await got.until(count + 1))[-1] == "last"


@pytest_twisted.ensureDeferred
async def test_terminated_backend(listener: PgListener, postgres_database: str, postgres_server: PostgresServer) -> None:
    """
    When the listener's backend is terminated, it is told at once
    (C{on_lost}), reconnects (C{on_reconnect}) with a new session that
    listens again, and C{run} refuses while there is no session.
    """
    got = Inbox()
    signals = Signals(listener)
    await listener.listen("c", got)
    await listener.start()
    assert signals.reconnected == 0
    before = await listener.run(_backend_pid)

    lost = signals.next_lost()
    reconnected = signals.next_reconnect()
    assert await threads.deferToThread(_terminate, postgres_server.admin_conninfo, before)
    await lost
    assert isinstance(signals.lost[-1].value, psycopg.OperationalError)
    assert listener.state is ListenerState.RECONNECTING
    with pytest.raises(NotListening):
        await listener.run(_backend_pid)
    await reconnected
    assert listener.state is ListenerState.LISTENING
    assert signals.reconnected == 1 and len(signals.lost) == 1
    assert await listener.run(_backend_pid) != before

    await _send(postgres_database, "c", ["after"])
    assert await got.until(1) == ["after"]
    assert _listener_timers(listener) == []


class _ClockedReactor:
    """
    The real reactor, except that its timers are a L{Clock} the test
    advances: the listener's backoff is seen exactly.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def callLater(self, delay: float, f: Callable[..., object], *args: object, **kw: object) -> Any:
        return self.clock.callLater(delay, f, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


@pytest_twisted.ensureDeferred
async def test_server_restart_with_backoff(postgres_server: PostgresServer, postgres_database: str) -> None:
    """
    While the server is down the listener tries again after waits that grow
    from 0.1 s, each between half and all of its step; once the server is
    back it listens again on the same channels and receives what is sent.
    """
    clock = Clock()
    listener = PgListener(postgres_database, _ClockedReactor(clock))
    got = Inbox()
    signals = Signals(listener)
    await listener.listen("c", got)
    await listener.start()
    try:
        lost = signals.next_lost()
        await threads.deferToThread(postgres_server.stop)
        try:
            await lost
            assert listener.state is ListenerState.RECONNECTING
            waits = []
            for attempt in range(4):
                (retry,) = clock.getDelayedCalls()
                waits.append(retry.getTime() - clock.seconds())
                clock.advance(waits[-1])
                # The attempt fails (connection refused) and the next is set.
                await _until(lambda: bool(clock.getDelayedCalls()))
            step = FIRST_DELAY
            for wait in waits:
                assert step / 2 <= wait <= step
                step = min(step * 2, LONGEST_DELAY)
            assert listener.state is ListenerState.RECONNECTING
        finally:
            await threads.deferToThread(postgres_server.start)
        reconnected = signals.next_reconnect()
        (retry,) = clock.getDelayedCalls()
        clock.advance(retry.getTime() - clock.seconds())
        await reconnected
        assert listener.state is ListenerState.LISTENING
        assert clock.getDelayedCalls() == []
        await _send(postgres_database, "c", ["back"])
        assert await got.until(1) == ["back"]
    finally:
        await listener.stop()


@pytest_twisted.ensureDeferred
async def test_server_restart(listener: PgListener, postgres_server: PostgresServer, postgres_database: str) -> None:
    """
    A fast restart of the server under the real reactor: lost, connected
    again, listening again.
    """
    got = Inbox()
    signals = Signals(listener)
    await listener.listen("c", got)
    await listener.start()
    lost = signals.next_lost()
    reconnected = signals.next_reconnect()
    await threads.deferToThread(postgres_server.restart)
    await lost
    await reconnected
    assert listener.state is ListenerState.LISTENING
    await _send(postgres_database, "c", ["after restart"])
    assert await got.until(1) == ["after restart"]


@pytest_twisted.ensureDeferred
async def test_first_connection_fails(postgres_server: PostgresServer) -> None:
    """
    If the first attempt fails, C{start} fails with the error and the
    listener is stopped: nothing is retried behind the caller's back.
    """
    bad = postgres_server.conninfo.replace(postgres_server.password, "wrong")
    listener = PgListener(bad, reactor)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await listener.start()
    assert listener.state is ListenerState.STOPPED
    assert _listener_timers(listener) == []
    await listener.stop()


@pytest_twisted.ensureDeferred
async def test_stop_during_reconnection(
    listener: PgListener, postgres_server: PostgresServer, postgres_database: str
) -> None:
    """
    Stopping while the session is lost cancels the next attempt.
    """
    signals = Signals(listener)
    await listener.start()
    lost = signals.next_lost()
    pid = await listener.run(_backend_pid)
    await threads.deferToThread(_terminate, postgres_server.admin_conninfo, pid)
    await lost
    await listener.stop()
    assert listener.state is ListenerState.STOPPED
    assert _listener_timers(listener) == []


async def _until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """
    Wait until C{predicate()} holds, looking every few milliseconds.
    """
    deadline = reactor.seconds() + timeout
    while not predicate():
        assert reactor.seconds() < deadline, "timed out"
        await deferLater(reactor, 0.005, lambda: None)


def test_reconnect_delays() -> None:
    """
    The waits double from 0.1 s up to 5 s, each between half and all of its
    step.
    """
    least = reconnect_delays(jitter=lambda: 0.0)
    most = reconnect_delays(jitter=lambda: 1.0)
    assert [round(next(least), 3) for _ in range(9)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.5, 2.5, 2.5]
    assert [round(next(most), 3) for _ in range(9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_password_never_shown() -> None:
    """
    What the listener says of itself (and logs) shows the database without
    its password.
    """
    listener = PgListener("postgresql://u:secret@db.example:5433/midjobs", reactor)
    assert repr(listener) == "<PgListener postgresql://u@db.example:5433/midjobs STOPPED>"
