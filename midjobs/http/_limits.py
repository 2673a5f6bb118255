"""
Connection caps of the TCP and TLS listeners: so many connections in all,
so many from one source address.

L{ConnectionLimits} counts the open connections of every listener it is
shared by.  The listeners are made by endpoints given a L{LimitingReactor}:
its C{listenTCP} and C{listenSSL} wrap the factory in a L{LimitedFactory}
(a L{twisted.protocols.policies.WrappingFactory}) outside everything else,
TLS included.  Its protocol wrapper is the socket's protocol for the whole
connection, a WebSocket upgraded from HTTP included (Autobahn swaps the
protocol under the TLS layer, or under this wrapper, never the outermost),
so every connection that was counted is released when it closes.

Past a cap, a new connection is closed at once: on a plain TCP listener
after a short C{503} answer, on a TLS one without a word (an answer would
first need the handshake).  One log line names the address, at most every
L{RefusalLog.interval} seconds, with how many were refused meanwhile.

The UNIX socket is never wrapped: C{midclt} always gets in.
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import TYPE_CHECKING, cast

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory

from ..logs import logger
from ..counts import NO_COUNTS, ICounts

if TYPE_CHECKING:
    from zope.interface import Interface

    class _IListeningReactor(Interface):
        """
        What L{LimitingReactor} calls on the reactor it wraps (for the type
        checker only: Twisted's own interfaces ask for a C{ServerFactory},
        where a listening port takes any protocol factory).
        """

        def listenTCP(
            port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
        ) -> IListeningPort:
            """
            See L{twisted.internet.interfaces.IReactorTCP.listenTCP}.
            """

        def adoptStreamPort(
            fileDescriptor: int, addressFamily: socket.AddressFamily, factory: IProtocolFactory
        ) -> IListeningPort:
            """
            See L{twisted.internet.interfaces.IReactorSocket.adoptStreamPort}.
            """

__all__ = ["ConnectionLimits", "LimitedFactory", "LimitingReactor", "RefusalLog", "SERVICE_UNAVAILABLE"]

log = logger(__name__)

_BODY = b"Too many connections: try again later\n"

#: What a plain TCP connection past a cap gets before it is closed.
SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: 10\r\n"
    b"Connection: close\r\n\r\n" % len(_BODY)
) + _BODY

#: Seconds a refused connection may take to read its answer before it is cut.
_REFUSAL_GRACE = 1.0


class RefusalLog:
    """
    Logs refusals, at most one line every C{interval} seconds: a flood of
    them costs a line now and then, each naming the latest address and how
    many were refused since the last line.  With a C{limit} (one of
    L{midjobs.metrics.LIMITS}), every refusal counts in C{counts}.

    @ivar interval: seconds between two lines.
    """

    def __init__(
        self, clock: IReactorTime, interval: float = 10.0, *, limit: str | None = None, counts: ICounts = NO_COUNTS
    ) -> None:
        self.clock = clock
        self.interval = interval
        self.limit = limit
        self.counts = counts
        self._last: float | None = None
        self._unlogged = 0

    def refused(self, message: str, **fields: object) -> None:
        """
        Log C{message} (a twisted.logger format with C{fields}) unless a line
        was logged less than C{interval} seconds ago; then only count it.
        """
        if self.limit is not None:
            self.counts.limit_hit(self.limit)
        now = self.clock.seconds()
        if self._last is not None and now - self._last < self.interval:
            self._unlogged += 1
            return
        unlogged, self._unlogged, self._last = self._unlogged, 0, now
        log.warn(message + " ({unlogged} more not logged in the last {interval:.0f} s)",
                 unlogged=unlogged, interval=self.interval, **fields)


class ConnectionLimits:
    """
    The open connections of the listeners that share it, counted in all and
    per source address.

    @ivar total: most connections open at once.
    @ivar per_address: most connections open at once from one address.
    @ivar counts: where refusals count, as the C{connections} or
        C{connections_per_address} limit (settable once the daemon's
        metrics exist).
    """

    def __init__(self, clock: IReactorTime, total: int, per_address: int, counts: ICounts = NO_COUNTS) -> None:
        self.clock = clock
        self.total = total
        self.per_address = per_address
        self.counts = counts
        self.log = RefusalLog(clock)
        self._open = 0
        self._by_address: Counter[str] = Counter()

    @property
    def open(self) -> int:
        """
        The connections open now.
        """
        return self._open

    def open_from(self, address: str) -> int:
        """
        The connections open now from C{address}.
        """
        return self._by_address[address]

    def exceeded(self, address: str) -> str | None:
        """
        The limit (C{connections} or C{connections_per_address}) a new
        connection from C{address} would exceed, or L{None} if it may open.
        """
        if self._open >= self.total:
            return "connections"
        if self._by_address[address] >= self.per_address:
            return "connections_per_address"
        return None

    def refusal(self, address: str) -> str | None:
        """
        Why a new connection from C{address} must be refused, or L{None} if
        it may open.
        """
        limit = self.exceeded(address)
        if limit == "connections":
            return f"{self._open} connections are open, the most there may be"
        if limit == "connections_per_address":
            return f"{self._by_address[address]} connections from this address are open, the most there may be"
        return None

    def refuse(self, address: str) -> str | None:
        """
        L{refusal}, and if there is one, count it (C{counts}) and log it (C{log}).
        """
        limit = self.exceeded(address)
        if limit is None:
            return None
        reason = self.refusal(address)
        self.counts.limit_hit(limit)
        self.log.refused("Refused a connection from {address}: {reason}", address=address, reason=reason)
        return reason

    def opened(self, address: str) -> None:
        self._open += 1
        self._by_address[address] += 1

    def closed(self, address: str) -> None:
        self._open -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]


def _host(address: IAddress | None) -> str:
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else str(address)


class _CountedConnection(ProtocolWrapper):
    """
    One admitted connection; its address is released when it closes.
    """

    source = ""


class _Refused(Protocol):
    """
    A connection past a cap: answer C{answer} (if any), close, and cut it if
    it is not gone after a short while.
    """

    def __init__(self, answer: bytes | None, clock: IReactorTime) -> None:
        self._answer = answer
        self._clock = clock
        self._cut: IDelayedCall | None = None

    def connectionMade(self) -> None:
        # A TCP transport: the count is outside any TLS layer.
        transport = cast(ITCPTransport, self.transport)
        if self._answer is None:
            transport.abortConnection()
            return
        transport.write(self._answer)
        transport.loseConnection()
        self._cut = self._clock.callLater(_REFUSAL_GRACE, transport.abortConnection)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._cut is not None and self._cut.active():
            self._cut.cancel()


class LimitedFactory(WrappingFactory[_CountedConnection]):
    """
    Wraps the factory of one listener so that its connections count in
    C{limits}, and those past a cap are refused.

    @ivar limits: the caps, shared by every TCP and TLS listener.
    @ivar refusal: the bytes a refused connection gets, or L{None} to close
        it without a word (on TLS).
    """

    protocol = _CountedConnection

    def __init__(
        self, wrapped: IProtocolFactory, limits: ConnectionLimits, refusal: bytes | None = SERVICE_UNAVAILABLE
    ) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]  # not annotated in Twisted
        self.limits = limits
        self.refusal = refusal

    # A refused connection gets a protocol of its own, no wrapper: a listening
    # port takes any protocol the factory gives.
    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:  # type: ignore[override]
        source = _host(addr)
        if self.limits.refuse(source) is not None:
            return _Refused(self.refusal, self.limits.clock)
        wrapper = super().buildProtocol(addr)
        wrapper.source = source
        return wrapper

    def registerProtocol(self, p: _CountedConnection) -> None:
        super().registerProtocol(p)  # type: ignore[no-untyped-call]  # not annotated in Twisted
        self.limits.opened(p.source)

    def unregisterProtocol(self, p: _CountedConnection) -> None:
        if p in self.protocols:
            self.limits.closed(p.source)
        super().unregisterProtocol(p)  # type: ignore[no-untyped-call]  # not annotated in Twisted


class LimitingReactor:
    """
    A reactor, for the server endpoints of the TCP and TLS listeners, whose
    C{listenTCP} and C{listenSSL} count every connection in C{limits}
    (L{LimitedFactory}, outside the TLS layer); everything else, C{listenUNIX}
    included, is the reactor's own.
    """

    def __init__(self, reactor: _IListeningReactor, limits: ConnectionLimits) -> None:
        self._reactor = reactor
        self.limits = limits

    def __getattr__(self, name: str) -> object:
        return getattr(self._reactor, name)

    def listenTCP(self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = "") -> IListeningPort:
        return self._reactor.listenTCP(port, LimitedFactory(factory, self.limits), backlog, interface)

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: IOpenSSLServerConnectionCreator,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        # What the reactor's listenSSL does, with the count outside the TLS
        # layer: a refused connection costs no handshake, and gets no answer.
        tls = TLSMemoryBIOFactory(contextFactory, False, factory)
        return self._reactor.listenTCP(port, LimitedFactory(tls, self.limits, refusal=None), backlog, interface)

    def adoptStreamPort(
        self, fileDescriptor: int, addressFamily: socket.AddressFamily, factory: IProtocolFactory
    ) -> IListeningPort:
        """
        A listening socket handed over by systemd (C{systemd:} endpoints):
        counted like C{listenTCP} when it is an Internet one.
        """
        if addressFamily in (socket.AF_INET, socket.AF_INET6):
            factory = LimitedFactory(factory, self.limits)
        return self._reactor.adoptStreamPort(fileDescriptor, addressFamily, factory)
