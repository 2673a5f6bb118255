# twisted.web (Request, HTTPChannel) and twisted.python.failure are unannotated.
# mypy: allow-untyped-calls
"""
A request body as a bounded stream: the one place that touches twisted.web's
channel while a body comes in.

twisted.web reads a whole request body (into memory or a temporary file)
before a resource sees the request.  A L{StreamingRequest} takes a body over
instead, through the calls its channel makes on it, which
C{twisted.web.http._IDeprecatedHTTPChannelToRequestInterface} declares and
both L{twisted.web.http.HTTPChannel} (HTTP/1.x) and C{H2Stream} (HTTP/2)
make:

  - C{parseCookies} and C{gotLength}, once the headers are in;
  - C{handleContentChunk}, for each piece of the (de-chunked) body;
  - C{requestReceived}, once the body ended;
  - C{connectionLost}.

The body is then a L{RequestBody}: C{await body.read()} gives what came,
C{b""} at the end.  At most one read's worth waits in it: while something is
queued, or while a consumer holds it (L{RequestBody.producer}, an
L{IPushProducer} to register with the consumer, the way
C{twisted.web._newclient.TransportProxyProducer} stands for a transport), the
channel is paused.  Only the body pauses and resumes the channel, through the
channel's own L{IPushProducer} methods.

What this relies on of Twisted beyond its documented interfaces, each checked
by C{tests/test_twisted_canary.py}:

  - the request line is known when C{gotLength} is called: C{HTTPChannel}'s
    C{_command}, C{_path} and C{_version}, C{H2Stream}'s C{command} and
    C{path} (L{_request_line});
  - both channels call C{parseCookies} after every header is in and before
    they look at C{Expect}: a request that takes C{Expect: 100-continue} out
    of its headers then gets no automatic C{100 Continue}
    (L{StreamingRequest.parseCookies});
  - both channels send a C{100 Continue} with C{_send100Continue()}
    (L{RequestBody.read});
  - C{HTTPChannel.pauseProducing} pauses reading its transport while no
    request is being handled (the body is coming), and
    C{H2Stream.pauseProducing} holds the stream's data back;
  - a TCP transport reads C{bufferSize} bytes at a time: an HTTP/1.x body is
    read L{READ_SIZE} bytes at a time (each read costs a trip through the
    parser and the pipe, whatever its size).
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Callable, Protocol, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http import HTTPChannel, datetimeToString
from zope.interface import implementer

__all__ = ["BodyInterrupted", "BodyProducer", "BodyState", "RequestBody", "StreamingRequest"]

#: After a refusal, how long and how much of the rest of the body is read
#: and dropped before the connection is closed: closing a socket with unread
#: data resets it, and the client may then lose the answer.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
#: Bytes read from the socket at a time while a body streams over HTTP/1.x
#: (Twisted reads 64 KiB otherwise).
READ_SIZE = 1024 * 1024


class BodyInterrupted(Exception):
    """
    The connection (or the HTTP/2 stream) was lost before the body ended.
    """


class BodyState(Enum):
    """
    Where a L{RequestBody} is.
    """

    #: The body comes; L{RequestBody.read} hands it out.
    STREAMING = "streaming"
    #: The request was answered before its body ended: what still comes is
    #: dropped for a while (L{RequestBody.drop_rest}).
    DROPPING = "dropping"
    #: The body ended.
    ENDED = "ended"
    #: The connection was lost first.
    LOST = "lost"
    #: The connection was closed by L{RequestBody.drop_rest}.
    CLOSED = "closed"


class _Channel(Protocol):
    """
    What the body uses of a request's channel: an L{IPushProducer} that
    reads the body, and can be closed.
    """

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...


def _request_line(channel: object) -> tuple[bytes, bytes, bytes] | None:
    """
    The method, target and version of the request whose headers C{channel}
    just read, or L{None} if it does not say.
    """
    if isinstance(channel, HTTPChannel):
        command, path = getattr(channel, "_command", None), getattr(channel, "_path", None)
        version = getattr(channel, "_version", b"HTTP/1.0")
    else:
        command, path, version = getattr(channel, "command", None), getattr(channel, "path", None), b"HTTP/2"
    if not isinstance(command, bytes) or not isinstance(path, bytes):
        return None
    return command, path, version


class _ReadSize:
    """
    The read size of the socket under an HTTP/1.x channel, raised to
    L{READ_SIZE} while a body streams, then put back.
    """

    def __init__(self, channel: HTTPChannel) -> None:
        transport = channel.transport
        # Under the wrappers of the connection limits and of TLS.
        while isinstance(transport, ProtocolWrapper):
            transport = transport.transport
        self._socket = transport
        self._saved: int | None = getattr(transport, "bufferSize", None)
        if self._saved is not None:
            setattr(transport, "bufferSize", READ_SIZE)

    def restore(self) -> None:
        if self._saved is not None:
            setattr(self._socket, "bufferSize", self._saved)
            self._saved = None


@implementer(IPushProducer)
class BodyProducer:
    """
    A consumer's hold on a L{RequestBody}: while paused, the body's channel is
    paused.  L{stopProxying} lets go (the way C{TransportProxyProducer} does):
    later calls do nothing.

    @ivar stopped: called when the consumer stops producing (it broke).
    """

    def __init__(self, body: RequestBody, stopped: Callable[[], object]) -> None:
        self._body: RequestBody | None = body
        self._holding = False
        self.stopped = stopped

    def pauseProducing(self) -> None:
        if self._body is not None and not self._holding:
            self._holding = True
            self._body._hold(1)

    def resumeProducing(self) -> None:
        if self._body is not None and self._holding:
            self._holding = False
            self._body._hold(-1)

    def stopProducing(self) -> None:
        if self._body is not None:
            self.stopProxying()
            self.stopped()

    def stopProxying(self) -> None:
        """
        Let go of the body: release its hold, forward nothing more.
        """
        body, self._body = self._body, None
        if body is not None and self._holding:
            self._holding = False
            body._hold(-1)


class RequestBody:
    """
    The body of one request, read on demand (see the module docstring).

    @ivar state: a L{BodyState}.
    @ivar received: bytes of body received so far.
    @ivar expects_continue: the client waits for a C{100 Continue} before it
        sends the body; the first L{read} sends it.
    """

    def __init__(self, request: StreamingRequest) -> None:
        self._request = request
        self._channel = cast(_Channel, request.channel)
        self.state = BodyState.STREAMING
        self.received = 0
        self.expects_continue = False
        self._continued = False
        self._queue: deque[bytes] = deque()
        self._reader: Deferred[bytes] | None = None
        self._failure: Failure | None = None
        self._holds = 0
        self._paused = False
        self._saved_timeout: float | None = None
        self._linger: IDelayedCall | None = None
        channel = request.channel
        self._read_size: _ReadSize | None = _ReadSize(channel) if isinstance(channel, HTTPChannel) else None

    @property
    def http11(self) -> bool:
        """
        Whether the body comes over an HTTP/1.x connection, rather than on one
        stream of an HTTP/2 connection.
        """
        return isinstance(self._channel, HTTPChannel)

    # -- the reader's side ---------------------------------------------------

    def read(self) -> Deferred[bytes]:
        """
        The next piece of the body: what is queued, or what comes next;
        C{b""} once it ended.  One read at a time.

        @raise BodyInterrupted: (through the L{Deferred}) the connection was
            lost before the body ended.
        """
        if self._reader is not None:
            raise RuntimeError("One read at a time")
        if self._queue:
            data = self._queue.popleft() if len(self._queue) == 1 else b"".join(self._queue)
            self._queue.clear()
            self._steer()
            return succeed(data)
        if self._failure is not None:
            return fail(self._failure)
        if self.state is not BodyState.STREAMING:
            return succeed(b"")
        if self.expects_continue and not self._continued and not self.received:
            self._continued = True
            # Private, the same method in both channels (see the module docstring).
            self._channel._send100Continue()  # type: ignore[attr-defined]
        reader: Deferred[bytes] = Deferred(self._cancel_read)
        self._reader = reader
        self._steer()
        return reader

    def producer(self, stopped: Callable[[], object]) -> BodyProducer:
        """
        A new hold on the body, to register with a consumer as its push
        producer; C{stopped} is called if the consumer stops it.
        """
        return BodyProducer(self, stopped)

    def close_after_response(self) -> None:
        """
        Make the response the last of the connection (HTTP/1.x: the rest of
        the body is not read, so the connection cannot carry another request).
        """
        if self.http11:
            self._request.setHeader(b"Connection", b"close")
            self._request.channel.persistent = False

    def drop_rest(self) -> None:
        """
        The request was answered before its body ended: drop what still comes,
        for at most L{LINGER_SECONDS} and L{LINGER_BYTES}, so that the client
        can read the answer; then close the connection (on HTTP/2, reset the
        stream).  If the body ends first, finish the request.

        A client that waits for C{100 Continue} and was sent none sends no
        body: its HTTP/1.1 connection is closed at once.  A body that ended
        already has nothing left: the request is finished now.
        """
        if self.state is BodyState.ENDED and not self._request.finished:
            self._request.finish()
        if self.state is not BodyState.STREAMING:
            return
        self.state = BodyState.DROPPING
        self._restore_read_size()
        self._queue.clear()
        self._holds = 0
        self._steer()
        if self.http11 and self.expects_continue and not self._continued and not self.received:
            self._close()
        else:
            self._linger = self._request.reactor.callLater(LINGER_SECONDS, self._close)

    # -- the channel's side (StreamingRequest) ------------------------------

    def _data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.state is BodyState.DROPPING:
            if self.received > LINGER_BYTES:
                self._close()
            return
        if self.state is not BodyState.STREAMING or not data:
            return
        reader, self._reader = self._reader, None
        if reader is not None and not self._queue:
            reader.callback(data)
        else:
            self._queue.append(data)
        self._steer()

    def _ended(self) -> None:
        if self.state is BodyState.DROPPING:
            self._stop_linger()
            self.state = BodyState.ENDED
            if not self._request.finished:
                self._request.finish()
            return
        if self.state is not BodyState.STREAMING:
            return
        self.state = BodyState.ENDED
        self._restore_read_size()
        self._holds = 0
        self._steer()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.callback(b"")

    def _lost(self, reason: Failure) -> None:
        self._stop_linger()
        if self.state in (BodyState.ENDED, BodyState.CLOSED):
            return
        streaming = self.state is BodyState.STREAMING
        self.state = BodyState.LOST
        self._paused = False
        self._queue.clear()
        if not streaming:
            return
        self._failure = Failure(BodyInterrupted(reason.getErrorMessage()))
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.errback(self._failure)

    # -- flow control ----------------------------------------------------------

    def _hold(self, change: int) -> None:
        if self.state is BodyState.STREAMING:
            self._holds += change
            self._steer()

    def _cancel_read(self, reader: Deferred[bytes]) -> None:
        if self._reader is reader:
            self._reader = None
        self._steer()

    def _steer(self) -> None:
        """
        Pause the channel while something is queued or a consumer holds the
        body; resume it otherwise.  The HTTP/1.x idle timeout is off while
        it is paused: a client held back is not idle.
        """
        pause = self.state is BodyState.STREAMING and bool(self._queue or self._holds)
        if pause == self._paused or self.state in (BodyState.LOST, BodyState.CLOSED):
            return
        self._paused = pause
        channel = self._channel
        if pause:
            if isinstance(channel, HTTPChannel):
                self._saved_timeout = channel.setTimeout(None)
            channel.pauseProducing()
        else:
            if isinstance(channel, HTTPChannel):
                channel.setTimeout(self._saved_timeout)
            channel.resumeProducing()

    def _restore_read_size(self) -> None:
        if self._read_size is not None:
            self._read_size.restore()
            self._read_size = None

    def _stop_linger(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None

    def _close(self) -> None:
        self._stop_linger()
        if self.state is not BodyState.DROPPING:
            return
        self.state = BodyState.CLOSED
        if self.http11:
            self._channel.loseConnection()
        else:
            # The stream only: the connection goes on.
            self._channel.abortConnection()


class StreamingRequest(server.Request):
    """
    A L{server.Request} whose body may stream (see the module docstring):
    L{body_handler} decides, request by request, once the headers are in.

    The handler gets the request's L{RequestBody} in the next turn of the
    reactor: C{H2Stream} calls C{gotLength} from its constructor, before its
    connection knows the stream, so nothing may be written then.

    @ivar body: the streaming body, or L{None} for a request that twisted.web
        handles as usual.
    @ivar reactor: where the handler is called.
    """

    body: RequestBody | None = None
    _expects_continue = False
    _got_length = False

    def __init__(self, channel: HTTPChannel, reactor: IReactorTime) -> None:
        super().__init__(channel)
        self.reactor = reactor

    def body_handler(self, method: bytes, path: bytes, length: int | None) -> Callable[[RequestBody], object] | None:
        """
        What serves a C{method} C{path} request (without the query) whose
        body, of C{length} bytes (L{None}: chunked), streams; L{None} to let
        twisted.web read the body and serve the request as usual.
        """
        return None

    def _take_body(self, handler: Callable[[RequestBody], object]) -> None:
        """
        Stream the body to C{handler}.  The request is set up as twisted.web
        would set it up before C{process}: C{method}, C{uri}, C{path},
        C{args} (already), C{site} and its default headers.
        """
        site: server.Site = getattr(self.channel, "site")
        self.site = site
        self.setHeader(b"Server", server.version)
        self.setHeader(b"Date", datetimeToString())
        body = self.body = RequestBody(self)
        body.expects_continue = self._expects_continue and self.clientproto != b"HTTP/1.0"
        self.reactor.callLater(0, self._handle_body, handler, body)

    def _handle_body(self, handler: Callable[[RequestBody], object], body: RequestBody) -> None:
        if body.state is not BodyState.LOST:
            handler(body)

    def parseCookies(self) -> None:
        # Take Expect: 100-continue out before the channel answers it: a
        # streamed body sends it when it is first read (RequestBody.read).
        # HTTP/1.x calls this before gotLength, HTTP/2 before or after.
        headers = self.requestHeaders
        expect = headers.getRawHeaders(b"Expect")
        if expect and expect[0].lower() == b"100-continue" and (self.body is not None or not self._got_length):
            headers.removeHeader(b"Expect")
            self._expects_continue = True
            if self.body is not None:
                self.body.expects_continue = self.clientproto != b"HTTP/1.0"
        super().parseCookies()

    def gotLength(self, length: int | None) -> None:
        self._got_length = True
        line = _request_line(self.channel)
        if line is not None:
            method, uri, version = line
            self._set_target(method, uri, version)
            handler = self.body_handler(method, self.path, length)
            if handler is not None:
                self._take_body(handler)
        if self.body is None:
            if self._expects_continue:
                # Not taken over: the channel answers it, as twisted.web does.
                self.requestHeaders.setRawHeaders(b"Expect", [b"100-continue"])
            super().gotLength(length)

    def _set_target(self, method: bytes, uri: bytes, version: bytes) -> None:
        """
        Set what twisted.web sets in C{requestReceived}, from the request line.
        """
        self.method, self.uri, self.clientproto = method, uri, version
        path, question, query = uri.partition(b"?")
        self.path = path
        # twisted.web's own parser, which keeps undecodable bytes as bytes.
        self.args = http.parse_qs(query, 1) if question else {}

    def handleContentChunk(self, data: bytes) -> None:
        if self.body is not None:
            self.body._data_received(data)
        else:
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.body is not None:
            self.body._ended()
        else:
            super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self.body is not None:
            self.body._lost(reason)
