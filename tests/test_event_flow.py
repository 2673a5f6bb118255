"""
Events have flow control (issue 11, finding 3): what a connection sends goes
through its outbox, which the transport pauses; while paused, C{changed}
events about one object merge into the newest; past C{[limits] event_queue}
bytes the connection is closed with 1008.  In memory here (StringTransport,
MemoryReactorClock); over real sockets in C{test_event_flow_sockets.py}.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent

from midjobs.config import Settings
from midjobs.events import EventHub, Notification
from midjobs.middleware import Middleware
from midjobs.rpc import RpcServerFactory
from midjobs.rpc._outbox import Outbox, OutboxState

EVENT = "test.things"


def event(msg: str, id: int, value: str = "") -> Notification:
    payload = json.dumps({"msg": msg, "id": id, "value": value}).encode() + b"\n"
    return Notification(EVENT, msg, id, payload)


def response(n: int) -> bytes:
    return json.dumps({"response": n}).encode() + b"\n"


def written(transport: StringTransport) -> list[Any]:
    return [json.loads(line) for line in transport.value().splitlines()]


@attrs.define
class Box:
    outbox: Outbox
    transport: StringTransport
    overflows: list[int]


def make_box(limit: int = 10_000) -> Box:
    transport = StringTransport()
    overflows: list[int] = []
    outbox = Outbox(transport.write, limit, overflows.append)
    transport.registerProducer(outbox, True)
    return Box(outbox, transport, overflows)


def test_written_at_once_while_the_transport_takes_it() -> None:
    box = make_box()
    box.outbox.send_event(event("added", 1))
    box.outbox.send_response(response(1))
    assert written(box.transport) == [{"msg": "added", "id": 1, "value": ""}, {"response": 1}]
    assert box.outbox.queued_bytes == 0


def test_paused_changed_events_merge_into_the_newest() -> None:
    """
    While the transport is paused, a C{changed} about an object replaces
    the queued one (at the end: its C{added} stays before it); other
    events and other objects are kept, in order.
    """
    box = make_box()
    box.transport.producer.pauseProducing()
    box.outbox.send_event(event("added", 1))
    box.outbox.send_event(event("changed", 1, "a"))
    box.outbox.send_event(event("added", 2))
    box.outbox.send_event(event("changed", 2, "x"))
    box.outbox.send_event(event("changed", 1, "b"))
    box.outbox.send_event(event("changed", 1, "c"))
    box.outbox.send_event(event("removed", 2))
    assert box.transport.value() == b""
    sizes = [len(event("added", 1).payload), len(event("added", 2).payload), len(event("changed", 2, "x").payload)]
    sizes += [len(event("changed", 1, "c").payload), len(event("removed", 2).payload)]
    assert box.outbox.queued_bytes == sum(sizes)
    box.transport.producer.resumeProducing()
    assert [(m["msg"], m["id"], m["value"]) for m in written(box.transport)] == [
        ("added", 1, ""),
        ("added", 2, ""),
        ("changed", 2, "x"),
        ("changed", 1, "c"),
        ("removed", 2, ""),
    ]
    assert box.outbox.queued_bytes == 0
    assert box.outbox.state is OutboxState.WRITING


def test_a_response_is_a_barrier() -> None:
    """
    A C{changed} queued before an answer is not replaced by one queued after
    it: the client reads both in the order the daemon sent them.
    """
    box = make_box()
    box.transport.producer.pauseProducing()
    box.outbox.send_event(event("changed", 1, "a"))
    box.outbox.send_response(response(7))
    box.outbox.send_event(event("changed", 1, "b"))
    box.outbox.send_event(event("changed", 1, "c"))
    box.transport.producer.resumeProducing()
    assert written(box.transport) == [
        {"msg": "changed", "id": 1, "value": "a"},
        {"response": 7},
        {"msg": "changed", "id": 1, "value": "c"},
    ]


def test_a_pause_while_writing_the_queue_stops_it() -> None:
    """
    The transport may pause again from within a write: the rest waits.
    """
    writes: list[bytes] = []

    def write(data: bytes) -> None:
        # The transport's buffer fills at each write.
        writes.append(data)
        outbox.pauseProducing()

    outbox = Outbox(write, 10_000, lambda queued: None)
    outbox.pauseProducing()
    for n in range(3):
        outbox.send_response(response(n))
    outbox.resumeProducing()
    assert [json.loads(w) for w in writes] == [{"response": 0}]
    assert outbox.state is OutboxState.PAUSED
    outbox.resumeProducing()
    outbox.resumeProducing()
    assert [json.loads(w) for w in writes] == [{"response": 0}, {"response": 1}, {"response": 2}]
    assert outbox.queued_bytes == 0


def test_past_the_limit_the_outbox_closes() -> None:
    """
    Past the limit (responses and events counted alike) the outbox drops
    what it holds, tells its owner once, and takes nothing more.
    """
    box = make_box(limit=1000)
    box.transport.producer.pauseProducing()
    n = 0
    while not box.overflows:
        assert box.outbox.queued_bytes <= 1000
        box.outbox.send_event(event("added", n, "x" * 50))
        box.outbox.send_response(response(n))
        n += 1
    assert box.overflows[0] > 1000
    assert box.outbox.state is OutboxState.CLOSED
    assert box.outbox.queued_bytes == 0
    box.outbox.send_event(event("added", 99))
    box.outbox.send_response(response(99))
    box.transport.producer.resumeProducing()
    assert box.transport.value() == b"" and len(box.overflows) == 1


def test_merging_bounds_a_paused_subscriber_of_one_busy_object() -> None:
    """
    Endless changes of one object while paused hold one event, not all of them.
    """
    box = make_box(limit=1000)
    box.transport.producer.pauseProducing()
    for n in range(10_000):
        box.outbox.send_event(event("changed", 1, str(n)))
    assert box.outbox.queued_bytes == len(event("changed", 1, "9999").payload)
    assert len(box.outbox._queue) < 200
    box.transport.producer.resumeProducing()
    assert written(box.transport) == [{"msg": "changed", "id": 1, "value": "9999"}]


def test_stop_producing_drops_what_waits() -> None:
    box = make_box()
    box.transport.producer.pauseProducing()
    box.outbox.send_event(event("added", 1))
    box.outbox.stopProducing()
    assert box.outbox.queued_bytes == 0
    box.outbox.resumeProducing()
    assert box.transport.value() == b""


# The WebSocket protocol in memory.

PEER = IPv4Address("TCP", "192.0.2.7", 40000)


@attrs.frozen
class User:
    username: str


def client_frame(text: str) -> bytes:
    """
    One masked text frame (the mask is zero, so the payload reads as is).
    """
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """
    The frames in what the server wrote after its handshake: C{(opcode, payload)}.
    """
    frames = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            start = 4
        elif length == 127:
            (length,) = struct.unpack("!Q", data[2:10])
            start = 10
        frames.append((opcode, data[start : start + length]))
        data = data[start + length :]
    return frames


@attrs.define
class Connection:
    reactor: MemoryReactorClock
    middleware: Middleware
    protocol: Any
    transport: StringTransport

    def frames(self) -> list[tuple[int, bytes]]:
        return server_frames(self.transport.value())

    def close_frame(self) -> tuple[int, str]:
        closes = [payload for opcode, payload in self.frames() if opcode == 8]
        assert len(closes) == 1, self.frames()
        (code,) = struct.unpack("!H", closes[0][:2])
        return code, closes[0][2:].decode()


def open_connection(tmp_path: Path, settings: Settings) -> Connection:
    reactor = MemoryReactorClock()
    middleware = Middleware(reactor, tmp_path, settings=settings)
    middleware.events.register(EVENT, "Things for the tests")
    factory = RpcServerFactory(middleware)
    # Autobahn's own timers run on the global reactor: none in memory.
    factory.setProtocolOptions(autoPingInterval=0, closeHandshakeTimeout=0, openHandshakeTimeout=0)
    protocol = factory.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    key = base64.b64encode(b"0123456789abcdef").decode()
    protocol.dataReceived(
        (
            "GET /api/current HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head, _, rest = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert rest == b""
    transport.clear()
    return Connection(reactor, middleware, protocol, transport)



def logged(log_events: list[dict[str, Any]], text: str) -> list[str]:
    return [formatEvent(e) for e in log_events if text in formatEvent(e)]


def test_the_outbox_is_the_transports_producer(tmp_path: Path) -> None:
    conn = open_connection(tmp_path, Settings())
    assert conn.transport.producer is conn.protocol.outbox
    assert conn.transport.streaming


def test_a_paused_connection_is_closed_past_its_event_queue(tmp_path: Path, log_events: list) -> None:
    """
    While the transport is paused, events and answers wait in the outbox;
    past C{max_event_queue} bytes the connection is closed with 1008 and a
    reason, logged with the user and the address, and its subscriptions end.
    """
    limit = 4096
    conn = open_connection(tmp_path, Settings(max_event_queue=limit))
    session = conn.protocol.session
    session.login(User("carol"))
    session.subscribe(EVENT)
    hub: EventHub = conn.middleware.events
    hub.send(EVENT, "added", 1, {"n": 1})
    assert [opcode for opcode, _ in conn.frames()] == [1]
    conn.transport.clear()

    conn.transport.producer.pauseProducing()
    hub.send(EVENT, "added", 2, {"n": 2})
    conn.protocol.dataReceived(client_frame('{"jsonrpc": "2.0", "id": 1, "method": "no.such"}'))
    assert conn.transport.value() == b""
    queued = conn.protocol.outbox.queued_bytes
    assert queued > 0
    n = 3
    while hub.has_subscribers(EVENT):
        assert conn.protocol.outbox.queued_bytes <= limit
        hub.send(EVENT, "added", n, {"n": n, "pad": "x" * 100})
        n += 1
    assert conn.close_frame() == (1008, "event queue limit exceeded")
    assert [opcode for opcode, _ in conn.frames()] == [8]
    [line] = logged(log_events, "event queue limit")
    assert "carol" in line and "192.0.2.7" in line and str(limit) in line
    # Nothing more is queued or written once closed.
    hub.send(EVENT, "added", n, {"n": n})
    conn.transport.producer.resumeProducing()
    assert [opcode for opcode, _ in conn.frames()] == [8]


def test_a_slow_connection_gets_everything_in_order(tmp_path: Path) -> None:
    """
    Below the limit, a paused connection loses nothing but replaced
    C{changed} events, and answers keep their place.
    """
    conn = open_connection(tmp_path, Settings())
    conn.protocol.session.login(User("carol"))
    conn.protocol.session.subscribe(EVENT)
    hub = conn.middleware.events
    conn.transport.producer.pauseProducing()
    hub.send(EVENT, "added", 1, {"v": 0})
    hub.send(EVENT, "changed", 1, {"v": 1})
    conn.protocol.dataReceived(client_frame('{"jsonrpc": "2.0", "id": 1, "method": "no.such"}'))
    hub.send(EVENT, "changed", 1, {"v": 2})
    hub.send(EVENT, "changed", 1, {"v": 3})
    conn.transport.producer.resumeProducing()
    messages = [json.loads(payload) for opcode, payload in conn.frames()]
    seen = [m["params"]["fields"]["v"] if "params" in m else ("answer", m["id"]) for m in messages]
    assert seen == [0, 1, ("answer", 1), 3]
