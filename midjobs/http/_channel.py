# twisted.web (Request, HTTPChannel) and twisted.python.failure are unannotated.
# mypy: allow-untyped-calls
"""
The HTTP channel and site of every listener: twisted.web's, with a deadline
for a request's headers.

twisted.web's idle timeout (C{Site(timeout=...)}, the channel's C{timeOut})
is restarted by every byte that comes in, so a client that trickles a header
line now and then holds its connection forever.  L{Channel} adds a header
deadline: from the first byte of a request (or the connection's start) to
the end of its headers, at most L{Site.header_timeout} seconds; past it the
client gets a C{408} and the connection is closed.

While a request is being handled twisted.web turns the idle timeout off
(a long download is not idle), and an upload turns it off while the job holds
its body back; an upgraded WebSocket never finishes its request, so neither
timeout reaches it (Autobahn's pings watch it instead).

Over TLS, a client may negotiate HTTP/2 (ALPN, with the C{h2} package):
twisted.web's own channel switches to its HTTP/2 connection then.  L{Site}
builds that channel, C{twisted.web.http._GenericHTTPChannelProtocol}, around
a L{Channel} (the one private name of twisted.web used here, checked by
C{tests/test_twisted_canary.py}); an HTTP/2 connection has no header
deadline (its streams' headers come in one frame).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from twisted.internet.interfaces import INegotiated, IProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.server import Site as _TwistedSite

from ._limits import RefusalLog

__all__ = ["Channel", "ChannelState", "Site"]

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_LINE_TOO_LONG = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class ChannelState(Enum):
    """
    Where a channel is in its current request.
    """

    #: Between requests (or before the first byte of the first): the idle
    #: timeout applies.
    IDLE = "idle"
    #: The request line and headers are coming: the header deadline runs.
    HEADERS = "headers"
    #: The headers are in; the body comes, or the request is being handled.
    REQUEST = "request"


class Channel(HTTPChannel):
    """
    An L{HTTPChannel} whose requests must send their headers within
    C{header_timeout} seconds (L{None}: no deadline).

    @ivar state: a L{ChannelState}.
    """

    header_timeout: float | None = None
    refusals: RefusalLog | None = None

    def __init__(self) -> None:
        super().__init__()
        self.state = ChannelState.IDLE
        self._deadline: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        # A connection that sends nothing is held to the same deadline.
        self._start_deadline()

    def dataReceived(self, data: bytes) -> None:
        if self.state is ChannelState.IDLE and data:
            self._start_deadline()
        super().dataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A request or header line longer than C{MAX_LENGTH} (16 KiB): answer
        C{431} and close, where twisted.web closes without a word.
        """
        self.stop_deadline()
        if self.transport is not None:
            self.transport.write(_LINE_TOO_LONG)
            self.transport.loseConnection()

    def allHeadersReceived(self) -> None:
        self.stop_deadline()
        self.state = ChannelState.REQUEST
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        # Data of the next request that came meanwhile is replayed through
        # dataReceived by the base class: it starts that request's deadline.
        self.state = ChannelState.IDLE
        super().requestDone(request)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.stop_deadline()
        super().connectionLost(reason)

    def _start_deadline(self) -> None:
        self.state = ChannelState.HEADERS
        if self.header_timeout is not None and self._deadline is None:
            self._deadline = self.callLater(self.header_timeout, self._headers_too_late)

    def stop_deadline(self) -> None:
        """
        Stop the header deadline, if it runs.
        """
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _headers_too_late(self) -> None:
        self._deadline = None
        if self.transport is None:
            return
        negotiated = INegotiated(self.transport, None)
        if negotiated is not None and negotiated.negotiatedProtocol == b"h2":
            # The connection went over to HTTP/2: it is not this channel's.
            return
        peer = self.transport.getPeer()
        if self.refusals is not None:
            self.refusals.refused(
                "Closed the HTTP connection of {address}: its request headers took more than {timeout} s",
                address=getattr(peer, "host", str(peer)),
                timeout=self.header_timeout,
            )
        self.transport.write(_TIMED_OUT)
        # Closes, and aborts if the client does not let go (abortTimeout).
        self.timeoutConnection()


class Site(_TwistedSite):
    """
    A twisted.web L{Site} whose HTTP/1.x channels are L{Channel}s with its
    C{header_timeout}, and which speaks HTTP/2 when TLS negotiates it;
    C{timeout} is the keep-alive idle timeout.
    """

    def __init__(self, resource: Any, *, header_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.header_timeout = header_timeout
        self.refusals: RefusalLog | None = None

    def protocol(self) -> IProtocol:  # type: ignore[override]  # twisted.web's default is a method too
        """
        A new channel: a L{Channel}, which twisted.web's generic channel
        replaces with an HTTP/2 connection if TLS negotiated C{h2}.
        """
        channel = Channel()
        channel.header_timeout = self.header_timeout
        channel.refusals = self.refusals
        return _NegotiatedChannel(channel)


class _NegotiatedChannel(_GenericHTTPChannelProtocol):
    """
    twisted.web's generic channel around a L{Channel}: once it went over to
    HTTP/2, the L{Channel} hears nothing more, so its header deadline is
    stopped when the connection ends.
    """

    def __init__(self, channel: Channel) -> None:
        super().__init__(channel)
        self._http11 = channel

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._http11.stop_deadline()
        super().connectionLost(reason)
