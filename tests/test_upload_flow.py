"""
The body adapter's flow control, in memory: twisted.web's own HTTP/1.1
channel over a StringTransport, a MemoryReactorClock, and a Pipe fed the way
the upload feeds it (the body as the pipe's push producer, C{await
pipe.write(...)} for the writer).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from midjobs.http._body import BodyInterrupted, BodyState, RequestBody, StreamingRequest
from midjobs.pipe import Pipe

HIGH, LOW = 4096, 1024


class Fed(StreamingRequest):
    """
    A request whose body streams into C{pipe} through L{feed}.
    """

    clock = MemoryReactorClock()
    made: list[Fed] = []

    def __init__(self, channel: Any, queued: object = None) -> None:
        super().__init__(channel, self.clock)
        self.pipe = Pipe(self.clock, high_water=HIGH, low_water=LOW)
        self.fed: Deferred[None] | None = None
        Fed.made.append(self)

    def body_handler(self, method: bytes, path: bytes, length: int | None) -> Callable[[RequestBody], object]:
        return self.feed

    def feed(self, body: RequestBody) -> None:
        self.fed = Deferred.fromCoroutine(self._feed(body))

    async def _feed(self, body: RequestBody) -> None:
        self.pipe.registerProducer(body.producer(lambda: None), True)
        while data := await body.read():
            await self.pipe.write(data)
        self.pipe.close()


def connection(length: int) -> tuple[Any, StringTransport, Fed]:
    Fed.made = []
    site = server.Site(Resource())
    site.requestFactory = Fed
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % length)
    (request,) = Fed.made
    Fed.clock.advance(0)  # the handler starts
    return channel, transport, request


def level(pipe: Pipe) -> int:
    # Pipe has no public view of its fill level: the test peeks.
    return pipe.in_memory


def test_paused_exactly_at_high_water_resumed_at_low_water() -> None:
    channel, transport, request = connection(64 * 1024)
    pipe = request.pipe
    for _ in range(HIGH // 512 - 1):
        channel.dataReceived(b"x" * 512)
        assert transport.producerState == "producing"
    channel.dataReceived(b"x" * 512)
    assert level(pipe) == HIGH
    assert transport.producerState == "paused", "not paused at high water"
    # The job reads; the body stays paused until low water.
    while level(pipe) - 512 > LOW:
        pipe.read(512)
        assert transport.producerState == "paused", f"resumed above low water ({level(pipe)})"
    pipe.read(512)
    assert level(pipe) <= LOW
    assert transport.producerState == "producing", "not resumed at low water"


def test_a_read_past_high_water_is_queued_not_lost() -> None:
    channel, transport, request = connection(3 * HIGH)
    # One read (the channel delivers it at once) brings twice the high water.
    channel.dataReceived(b"a" * (2 * HIGH))
    assert transport.producerState == "paused"
    assert level(request.pipe) == 2 * HIGH
    channel.dataReceived(b"b" * HIGH)  # already read before the pause took effect
    body = request.body
    assert body is not None and body.state is BodyState.ENDED
    while level(request.pipe):
        request.pipe.read(HIGH)
    assert request.fed is not None and request.fed.called
    # The channel reads on once the request is answered.
    request.finish()
    assert transport.producerState == "producing"


def test_client_disconnecting_mid_body_fails_the_read() -> None:
    channel, transport, request = connection(10 * 1024)
    channel.dataReceived(b"x" * 100)
    channel.connectionLost(Failure(ConnectionLost("gone")))
    assert request.fed is not None
    failure = request.fed.result
    request.fed.addErrback(lambda _: None)
    assert isinstance(failure, Failure) and failure.check(BodyInterrupted)


def test_at_most_one_read_is_queued_while_nobody_reads() -> None:
    Fed.made = []
    site = server.Site(Resource())

    class Idle(Fed):
        def feed(self, body: RequestBody) -> None:
            self.idle = body

    site.requestFactory = Idle
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    assert transport.producerState == "paused"
    (request,) = Fed.made
    assert request.body is not None
    assert request.body.read().result == b"x" * 10
    assert transport.producerState == "producing"
