"""
Canaries: what midjobs.http relies on of Twisted beyond its documented
interfaces (see the docstrings of midjobs.http._body and midjobs.http._channel).

Each test drives Twisted's own HTTP/1.1 channel or HTTP/2 connection in
memory and fails with a message naming the behaviour if a Twisted release
changes it; the adapter (midjobs/http/_body.py) is then the one place to
adapt.
"""

from __future__ import annotations

from typing import Any, Callable

import h2.config
import h2.connection
import h2.events
from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web._http2 import H2Connection
from twisted.web.resource import Resource

from midjobs.http._body import RequestBody, StreamingRequest
from midjobs.http._channel import Channel, Site


class Recorder(StreamingRequest):
    """
    A request that streams every body it gets and records what it saw.
    """

    clock = MemoryReactorClock()
    made: list[Recorder] = []

    def __init__(self, channel: Any, queued: object = None) -> None:
        super().__init__(channel, self.clock)
        self.line: tuple[bytes, bytes, int | None] | None = None
        self.chunks: list[bytes] = []
        Recorder.made.append(self)

    def body_handler(self, method: bytes, path: bytes, length: int | None) -> Callable[[RequestBody], object] | None:
        self.line = (method, path, length)
        return lambda body: None

    def handleContentChunk(self, data: bytes) -> None:
        self.chunks.append(data)
        super().handleContentChunk(data)


def http11() -> tuple[http.HTTPChannel, StringTransport]:
    Recorder.made = []
    site = server.Site(Resource())
    site.requestFactory = Recorder
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


HEAD = (
    b"POST /_upload?x=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n"
    b"Expect: 100-continue\r\n\r\n"
)


def test_http11_request_line_known_at_got_length() -> None:
    channel, _ = http11()
    channel.dataReceived(HEAD)
    (request,) = Recorder.made
    assert request.line == (b"POST", b"/_upload", 10), (
        "HTTPChannel no longer holds the request line (_command, _path, _version) when it calls "
        "request.gotLength: midjobs.http._body._request_line must find it elsewhere"
    )


def test_http11_expect_taken_in_parse_cookies_sends_no_continue() -> None:
    channel, transport = http11()
    channel.dataReceived(HEAD)
    assert b"100 Continue" not in transport.value(), (
        "HTTPChannel answered Expect: 100-continue although the request took the header out in "
        "parseCookies: it no longer calls parseCookies before it looks at Expect"
    )
    (request,) = Recorder.made
    assert request.body is not None and request.body.expects_continue


def test_http11_send_100_continue() -> None:
    channel, transport = http11()
    channel.dataReceived(HEAD)
    (request,) = Recorder.made
    assert request.body is not None
    request.body.read()
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n", (
        "HTTPChannel._send100Continue() no longer writes a 100 Continue"
    )


def test_http11_pause_producing_pauses_reading_the_body() -> None:
    channel, transport = http11()
    channel.dataReceived(HEAD + b"01234")
    assert transport.producerState == "paused", (
        "HTTPChannel.pauseProducing no longer pauses its transport while a request's body is coming"
    )
    (request,) = Recorder.made
    assert request.body is not None
    assert request.body.read().result == b"01234"
    assert transport.producerState == "producing"
    channel.dataReceived(b"56789")
    assert request.body.read().result == b"56789"
    assert request.body.read().result == b"", "requestReceived was not called at the end of the body"


def test_tcp_transport_reads_buffer_size_bytes() -> None:
    assert isinstance(tcp.Connection.bufferSize, int) and "self.bufferSize" in (tcp.Connection.doRead.__doc__ or ""), (
        "twisted.internet.tcp.Connection no longer reads bufferSize bytes at a time: "
        "midjobs.http._body._ReadSize has no effect"
    )


# -- HTTP/2 -----------------------------------------------------------------------


class H2:
    """
    Twisted's HTTP/2 connection in memory, and an h2 client for it.
    """

    def __init__(self) -> None:
        Recorder.made = []
        self.clock = MemoryReactorClock()
        self.server = H2Connection(self.clock)
        self.server.requestFactory = Recorder
        self.server.site = server.Site(Resource())
        self.transport = StringTransport()
        self.server.makeConnection(self.transport)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.client.initiate_connection()
        self.flush()

    def flush(self) -> list[Any]:
        self.server.dataReceived(self.client.data_to_send())
        self.clock.advance(0)
        events = self.client.receive_data(self.transport.value())
        self.transport.clear()
        return events

    def post(self, *headers: tuple[str, str]) -> list[Any]:
        base = [(":method", "POST"), (":path", "/_upload"), (":scheme", "https"), (":authority", "localhost")]
        self.client.send_headers(1, base + list(headers))
        return self.flush()


def informational(events: list[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, h2.events.InformationalResponseReceived)]


def test_http2_request_line_known_at_got_length() -> None:
    h = H2()
    h.post(("content-length", "10"), ("expect", "100-continue"))
    (request,) = Recorder.made
    assert request.line == (b"POST", b"/_upload", 10), (
        "H2Stream no longer holds command and path when it calls request.gotLength"
    )


def test_http2_expect_after_content_length_sends_no_continue() -> None:
    h = H2()
    events = h.post(("content-length", "10"), ("expect", "100-continue"))
    assert not informational(events), (
        "H2Stream answered Expect: 100-continue although the request took the header out in "
        "parseCookies: it no longer calls parseCookies before it looks at Expect"
    )
    (request,) = Recorder.made
    assert request.body is not None and request.body.expects_continue
    request.body.read()
    events = h.flush()
    assert [dict(e.headers).get(b":status") for e in informational(events)] == [b"100"], (
        "H2Stream._send100Continue() no longer sends a 100 Continue"
    )


def test_http2_pause_producing_holds_the_data_back() -> None:
    h = H2()
    h.post(("content-length", "10"))
    (request,) = Recorder.made
    assert request.body is not None
    h.client.send_data(1, b"01234")
    h.flush()
    assert request.chunks == [b"01234"]
    # Queued in the body, unread: the stream is paused.
    h.client.send_data(1, b"56789", end_stream=True)
    h.flush()
    assert request.chunks == [b"01234"], "H2Stream.pauseProducing no longer holds the stream's data back"
    assert request.body.read().result == b"01234"
    assert request.chunks == [b"01234", b"56789"], "H2Stream.resumeProducing no longer delivers what it held"
    assert request.body.read().result == b"56789"
    assert request.body.read().result == b""
    request.connectionLost(Failure(Exception("done")))


# -- the site's channel ------------------------------------------------------------


class Negotiated(StringTransport):
    negotiatedProtocol = b"h2"


def test_generic_channel_wraps_ours_and_switches_to_http2() -> None:
    site = Site(Resource())
    protocol = site.buildProtocol(None)
    assert isinstance(protocol, http._GenericHTTPChannelProtocol), (
        "twisted.web.http._GenericHTTPChannelProtocol is gone: midjobs.http._channel.Site cannot serve HTTP/2"
    )
    assert isinstance(protocol._channel, Channel)
    protocol.makeConnection(Negotiated())
    protocol.dataReceived(h2.connection.H2Connection(h2.config.H2Configuration(client_side=True)).data_to_send())
    assert isinstance(protocol._channel, H2Connection), (
        "_GenericHTTPChannelProtocol no longer switches to H2Connection when TLS negotiated h2"
    )
    protocol.connectionLost(Failure(Exception("done")))
