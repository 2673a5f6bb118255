"""
PostgreSQL notifications read by the reactor: L{PgListener}.

One session of its own, in autocommit, issues the C{LISTEN}s; the reactor
then watches its socket (an C{IReadDescriptor}) and, when it is readable,
drains what has arrived with C{notifies(timeout=0)}, which never waits.  No
timer and no polling: a notification reaches its handler as soon as its
bytes do.

Connecting, C{LISTEN}, C{UNLISTEN} and the commands of L{PgListener.run}
block, so they run in one thread of the listener's own, one at a time, and
while one runs the socket is out of the reactor (one libpq connection is
never used by two threads at once).  Notifications that arrive meanwhile are
kept by psycopg and handed out right after.

The reactor watches a duplicate of the connection's socket: libpq closes its
own as soon as it reads the end of the connection, before the reactor could
take it out of its poller, and the number could be reused meanwhile.  The
duplicate is closed only once the reactor no longer watches it.

When the session is lost (the server restarts, the backend is terminated, a
cut network is seen by the TCP keepalives), the listener connects again with
an exponential backoff (L{reconnect_delays}), issues its C{LISTEN}s again and
tells L{PgListener.on_reconnect}'s callbacks: notifications sent while it
was away are lost, so they re-read what they need.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from enum import Enum, auto
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from twisted.internet.defer import Deferred, DeferredLock, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ..logs import logger
from .pg import safe_url

__all__ = [
    "ListenerState",
    "NotListening",
    "PgListener",
    "reconnect_delays",
]

log = logger(__name__)

_T = TypeVar("_T")

#: The first wait before connecting again, in seconds.
FIRST_DELAY = 0.1
#: The longest wait between two attempts, in seconds.
LONGEST_DELAY = 5.0

#: libpq's TCP keepalives, so that a cut network is noticed within about
#: 11 s (5 s idle, then 3 probes 2 s apart) instead of the system's hours.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
#: The same on the server's side of the session, so that the session (and a
#: session advisory lock it holds) ends as soon as the node is cut off.
_SERVER_KEEPALIVES = (
    "SET tcp_keepalives_idle = 5",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
)
#: How long connecting may take when the connection string does not say.
CONNECT_TIMEOUT = 10


class ListenerState(Enum):
    """
    Where a L{PgListener} is.
    """

    #: Not started yet, or stopped: no session, no reconnection.
    STOPPED = auto()
    #: Connecting for the first time (L{PgListener.start}).
    CONNECTING = auto()
    #: The session is up, its C{LISTEN}s issued, its socket watched.
    LISTENING = auto()
    #: The session was lost: waiting to connect again, or connecting.
    RECONNECTING = auto()


class NotListening(Exception):
    """
    L{PgListener.run} was asked for a command while the listener has no
    session (it is reconnecting, or stopped).
    """


def reconnect_delays(
    first: float = FIRST_DELAY, longest: float = LONGEST_DELAY, jitter: Callable[[], float] = random.random
) -> Iterator[float]:
    """
    The waits before each attempt to connect again: doubling from C{first}
    up to C{longest}, each drawn between half and all of that value so that
    nodes cut off together do not knock at once.

    @param jitter: a random number in [0, 1).
    """
    delay = first
    while True:
        yield delay * (0.5 + jitter() / 2)
        delay = min(delay * 2, longest)


def _connect(conninfo: str, application_name: str, channels: list[str]) -> psycopg.Connection[Any]:
    """
    Open the listener's session and issue its C{LISTEN}s (in the thread).
    """
    options = dict(KEEPALIVES)
    if "connect_timeout" not in conninfo_to_dict(conninfo):
        options["connect_timeout"] = CONNECT_TIMEOUT
    conn = psycopg.connect(conninfo, autocommit=True, application_name=application_name, **options)
    try:
        for statement in _SERVER_KEEPALIVES:
            conn.execute(statement)
        for channel in channels:
            conn.execute(_listen(channel))
    except BaseException:
        conn.close()
        raise
    return conn


def _listen(channel: str) -> sql.Composed:
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


def _unlisten(channel: str) -> sql.Composed:
    return sql.SQL("UNLISTEN {}").format(sql.Identifier(channel))


def _one_thread() -> ThreadPool:
    return ThreadPool(minthreads=0, maxthreads=1, name="midjobs-pg-listener")


@implementer(IReadDescriptor)
class PgListener:
    """
    A PostgreSQL session that listens to channels for the reactor (see the
    module docstring).

    @ivar state: a L{ListenerState}.
    """

    def __init__(self, conninfo: str, reactor: Any, *, application_name: str = "midjobs listener") -> None:
        """
        @param conninfo: a libpq connection string or C{postgresql://} URL.
        @raise ValueError: C{conninfo} is not a connection string.
        @param reactor: provides C{IReactorFDSet}, C{IReactorTime} and
            C{IReactorFromThreads}.
        @param application_name: how the session shows in
            C{pg_stat_activity}.
        """
        self._conninfo = conninfo
        #: The database as a log line may show it.
        self._where = safe_url(conninfo)
        self._reactor = reactor
        self._application_name = application_name
        self.state = ListenerState.STOPPED
        self._handlers: dict[str, Callable[[str], None]] = {}
        self._on_reconnect: list[Callable[[], object]] = []
        self._on_lost: list[Callable[[Failure], object]] = []
        #: The session, while there is one.
        self._conn: psycopg.Connection[Any] | None = None
        #: The duplicate of its socket the reactor watches, or -1.
        self._fd = -1
        #: Held by whatever uses the session in the thread.
        self._session = DeferredLock()
        #: The thread of the session's commands (a new one after a stop: a
        #: stopped ThreadPool does not start again).
        self._threads = _one_thread()
        self._delays = reconnect_delays()
        self._retry: IDelayedCall | None = None

    def __repr__(self) -> str:
        return f"<PgListener {self._where} {self.state.name}>"

    # The public face.

    def start(self) -> Deferred[None]:
        """
        Connect and issue the C{LISTEN}s of the channels given so far.

        @return: fires once listening, or fails with the error of this first
            attempt (the listener is then L{ListenerState.STOPPED}).  Only
            later losses are retried.
        """
        if self.state is not ListenerState.STOPPED:
            raise RuntimeError(f"{self!r} was already started")
        self.state = ListenerState.CONNECTING
        if self._threads.joined:
            self._threads = _one_thread()
        self._threads.start()

        def failed(reason: Failure) -> Failure:
            self.state = ListenerState.STOPPED
            self._threads.stop()
            return reason

        return self._open().addErrback(failed)

    def listen(self, channel: str, handler: Callable[[str], None]) -> Deferred[None]:
        """
        Call C{handler} with the payload of each notification on C{channel},
        on the reactor thread, in the order they arrive; the channel is
        listened to again after each reconnection.  A channel has one handler:
        a second call replaces the first's.

        @return: fires once the channel is listened to, or will be as soon
            as the listener has a session again.
        """
        new = channel not in self._handlers
        self._handlers[channel] = handler
        if not new:
            return succeed(None)
        return self._on_session(lambda conn: conn.execute(_listen(channel)), channel=channel)

    def unlisten(self, channel: str) -> Deferred[None]:
        """
        Stop listening to C{channel}; its handler is forgotten at once.
        """
        if self._handlers.pop(channel, None) is None:
            return succeed(None)
        return self._on_session(lambda conn: conn.execute(_unlisten(channel)), channel=None)

    def run(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> Deferred[_T]:
        """
        Call C{fn} with the listener's own session (in autocommit), in the
        listener's thread, after the commands asked before it: for what must
        belong to this session, such as a session advisory lock.

        @return: fires with C{fn}'s result; fails with L{NotListening} when
            there is no session, or with C{fn}'s error (a lost connection is
            also handled as a loss of the session).
        """

        def locked(_: object) -> Deferred[_T]:
            if self._conn is None:
                self._session.release()
                raise NotListening(f"the listener has no database session ({self.state.name})")
            return self._in_thread(fn)

        return self._session.acquire().addCallback(locked)

    def on_reconnect(self, callback: Callable[[], object]) -> None:
        """
        Call C{callback} after each reconnection, once the channels are
        listened to again (not after L{start}).  What was notified while the
        listener was away is lost: re-read it here.  A Deferred it returns
        is waited for only to log its failure.
        """
        self._on_reconnect.append(callback)

    def on_lost(self, callback: Callable[[Failure], object]) -> None:
        """
        Call C{callback} with the reason each time the session is lost
        (before reconnecting).
        """
        self._on_lost.append(callback)

    def stop(self) -> Deferred[None]:
        """
        Close the session and stop reconnecting, once the command at hand
        (if any) has ended.
        """
        if self.state is ListenerState.STOPPED:
            return succeed(None)
        self.state = ListenerState.STOPPED
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

        def close(_: object) -> Deferred[None]:
            conn = self._detach()
            d: Deferred[None] = succeed(None)
            if conn is not None:
                d = deferToThreadPool(self._reactor, self._threads, conn.close)

            def done(result: object) -> None:
                self._session.release()
                self._threads.stop()

            return d.addBoth(done)

        return self._session.acquire().addCallback(close)

    # IReadDescriptor

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "pg-listener"

    def doRead(self) -> None:
        """
        Hand out the notifications that have arrived, without waiting.
        """
        conn = self._conn
        if conn is None:
            return
        arrived: list[psycopg.Notify] = []
        lost: Failure | None = None
        try:
            for notify in conn.notifies(timeout=0):
                arrived.append(notify)
        except psycopg.Error as e:
            lost = Failure(e)  # type: ignore[no-untyped-call]  # Failure.__init__ is not annotated
        self._dispatch(arrived)
        if lost is not None and self._conn is conn:
            self._lost(lost)

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor stops watching (it is shutting down): nothing to do, the
        session is closed by L{stop}.
        """

    # Inside.

    def _dispatch(self, arrived: list[psycopg.Notify]) -> None:
        for notify in arrived:
            handler = self._handlers.get(notify.channel)
            if handler is None:
                continue
            try:
                handler(notify.payload)
            except Exception:
                log.failure("The handler of the channel {channel} failed", channel=notify.channel)

    def _watch(self, conn: psycopg.Connection[Any]) -> None:
        """
        Watch C{conn}'s socket from the reactor and hand out what it already
        holds (notifications received during a command are kept by psycopg,
        and the socket may have nothing more to read).
        """
        self._conn = conn
        self._fd = os.dup(conn.fileno())
        self._reactor.addReader(self)
        self.doRead()

    def _unwatch(self) -> None:
        if self._fd != -1:
            self._reactor.removeReader(self)
            os.close(self._fd)
            self._fd = -1

    def _detach(self) -> psycopg.Connection[Any] | None:
        """
        Stop watching, and forget the session (the caller closes it).
        """
        self._unwatch()
        conn, self._conn = self._conn, None
        return conn

    def _in_thread(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> Deferred[_T]:
        """
        Run C{fn} on the session in the thread with the socket out of the
        reactor; the session lock is held and is released here.
        """
        conn = self._conn
        assert conn is not None
        self._unwatch()
        d = deferToThreadPool(self._reactor, self._threads, fn, conn)

        def ended(result: _T | Failure) -> _T | Failure:
            try:
                if self._conn is conn:
                    if isinstance(result, Failure) and (isinstance(result.value, psycopg.OperationalError) or conn.broken):
                        self._lost(result)
                    else:
                        self._watch(conn)
            finally:
                self._session.release()
            return result

        return d.addBoth(ended)

    def _on_session(self, fn: Callable[[psycopg.Connection[Any]], object], channel: str | None) -> Deferred[None]:
        """
        Run a C{LISTEN} or C{UNLISTEN} now if there is a session; if there is
        none, or it is lost meanwhile, the next one starts from the handlers.
        """

        def locked(_: object) -> Deferred[None]:
            if self._conn is None or (channel is not None and channel not in self._handlers):
                self._session.release()
                return succeed(None)

            def settled(result: object) -> None:
                if isinstance(result, Failure) and not isinstance(result.value, psycopg.OperationalError):
                    result.raiseException()

            return self._in_thread(fn).addBoth(settled)

        return self._session.acquire().addCallback(locked)

    def _open(self) -> Deferred[None]:
        """
        Connect (first time or again) under the session lock, then watch.
        """

        def locked(_: object) -> Deferred[None]:
            d = deferToThreadPool(
                self._reactor, self._threads, _connect, self._conninfo, self._application_name, list(self._handlers)
            )

            def connected(conn: psycopg.Connection[Any]) -> Deferred[None] | bool:
                if self.state is ListenerState.STOPPED:
                    return deferToThreadPool(self._reactor, self._threads, conn.close)
                again = self.state is ListenerState.RECONNECTING
                self.state = ListenerState.LISTENING
                self._delays = reconnect_delays()
                self._watch(conn)
                return again

            def release(result: object) -> None:
                self._session.release()
                if isinstance(result, Failure):
                    result.raiseException()
                if result is True:
                    log.info("listening again to {where}", where=self._where)
                    self._reconnected()

            return d.addCallback(connected).addBoth(release)

        return self._session.acquire().addCallback(locked)

    def _reconnected(self) -> None:
        for callback in list(self._on_reconnect):
            maybeDeferred(callback).addErrback(
                lambda f: log.failure("A callback after the listener's reconnection failed", f)
            )

    def _lost(self, reason: Failure) -> None:
        """
        The session is gone: close it, tell, and try again after a wait.
        """
        conn = self._detach()
        if conn is not None:
            deferToThreadPool(self._reactor, self._threads, conn.close).addErrback(lambda f: None)
        if self.state is ListenerState.STOPPED:
            return
        log.warn(
            "lost the listening session to {where}: {error}",
            where=self._where,
            error=str(reason.value).strip(),
        )
        self.state = ListenerState.RECONNECTING
        for callback in list(self._on_lost):
            maybeDeferred(callback, reason).addErrback(
                lambda f: log.failure("A callback after the listener's loss failed", f)
            )
        self._schedule()

    def _schedule(self) -> None:
        if self.state is ListenerState.RECONNECTING:
            self._retry = self._reactor.callLater(next(self._delays), self._attempt)

    def _attempt(self) -> None:
        self._retry = None
        if self.state is not ListenerState.RECONNECTING:
            return

        def failed(reason: Failure) -> None:
            log.debug("connecting again failed: {error}", error=str(reason.value).strip())
            self._schedule()

        self._open().addErrback(failed)
