"""
Connection caps, the HTTP header deadline and idle timeout, and the
descriptor limit (issue 11, finding 4).  The caps against a real daemon; the
deadlines in memory, on the listeners' own site (L{make_site}) over a
C{StringTransport}, its timers on a L{MemoryReactorClock}; the rest in memory.
"""

from __future__ import annotations

import json
import resource
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from midjobs.client import connect
from midjobs.config import Settings
from midjobs.descriptors import RESERVE, connection_capacity, raise_descriptor_limit
from midjobs.http import ConnectionLimits, RefusalLog, make_site
from midjobs.middleware import Middleware
from midjobs.plugins import BUILTIN_SERVICES

from conftest import ADMIN, RunningDaemon
from test_event_flow import client_frame, server_frames


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, max_connections=3, max_connections_per_address=2, header_timeout=1, idle_timeout=1)



class Raw(Protocol):
    """
    A connection that collects what it receives until it closes.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()
        self.data: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.data.called:
            self.data.callback(data)

    def connectionLost(self, reason: Failure) -> None:
        self.closed.callback(self.received)


async def open_from(daemon: RunningDaemon, source: str = "127.0.0.1") -> Raw:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port, bindAddress=(source, 0))
    return await connectProtocol(endpoint, Raw())


async def admitted(daemon: RunningDaemon, count: int) -> None:
    """
    Wait until the daemon counts C{count} open connections (it accepts them
    a moment after the client sees them connected).
    """
    limits = daemon.daemon.connection_limits
    for _ in range(200):
        if limits.open == count:
            return
        await deferLater(reactor, 0.01)
    assert limits.open == count


async def http_get(connection: Raw, path: bytes = b"/") -> bytes:
    connection.transport.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    return await connection.data.addTimeout(5, reactor)


@pytest_twisted.ensureDeferred
async def test_connections_per_address_are_capped(daemon: RunningDaemon, log_events: list[dict[str, Any]]) -> None:
    first, second = await open_from(daemon), await open_from(daemon)
    await admitted(daemon, 2)
    third = await open_from(daemon)
    answer = await third.closed.addTimeout(5, reactor)
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert answer.endswith(b"Too many connections: try again later\n")
    # Another address still gets in, up to the cap in all.
    other = await open_from(daemon, "127.0.0.2")
    await admitted(daemon, 3)
    assert (await http_get(other)).startswith(b"HTTP/1.1 200 ")
    fourth = await open_from(daemon, "127.0.0.3")
    assert (await fourth.closed.addTimeout(5, reactor)).startswith(b"HTTP/1.1 503 ")
    # midclt's way in, the UNIX socket, is never counted.
    await daemon.middleware.users.create({"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
    local = await connect(daemon.unix_url, reactor=reactor)
    assert await local.call("core.ping") == "pong"
    await local.close()
    # A closed connection frees its place.
    first.transport.loseConnection()
    await first.closed
    await admitted(daemon, 2)
    again = await open_from(daemon)
    await admitted(daemon, 3)
    assert (await http_get(again)).startswith(b"HTTP/1.1 200 ")
    for connection in (second, other, again):
        connection.transport.loseConnection()
        await connection.closed
    # One line named the address; the second refusal, within 10 s, was only counted.
    refusals = [e for e in log_events if "Refused a connection" in e.get("log_format", "")]
    assert [e["address"] for e in refusals] == ["127.0.0.1"]
    assert daemon.daemon.connection_limits.log._unlogged == 1


@pytest_twisted.ensureDeferred
async def test_websocket_connections_count_and_are_released(daemon: RunningDaemon) -> None:
    await daemon.middleware.users.create({"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
    clients = [await connect(daemon.ws_url, reactor=reactor) for _ in range(2)]
    await admitted(daemon, 2)
    refused = await open_from(daemon)
    assert (await refused.closed.addTimeout(5, reactor)).startswith(b"HTTP/1.1 503 ")
    for client in clients:
        await client.close()
    await admitted(daemon, 0)


# -- the HTTP deadlines, in memory --------------------------------------------------


PEER = IPv4Address("TCP", "192.0.2.7", 40000)
#: The upgrade request of a WebSocket to the JSON-RPC endpoint.
UPGRADE = (
    b"GET /api/current HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Transport(StringTransport):
    """
    A L{StringTransport} that, like a reactor's transports, takes a second
    C{unregisterProducer}: a connection whose header deadline and idle
    timeout end at the same moment is closed twice.
    """

    def unregisterProducer(self) -> None:
        if self.producer is not None:
            super().unregisterProducer()


@attrs.define
class HttpConnection:
    """
    A connection to a listener's site, in memory.

    @ivar transport: what the site wrote; its C{protocol} is what reads the
        connection (the channel, then the WebSocket it upgrades to), as on a
        reactor's transport.
    """

    clock: MemoryReactorClock
    transport: Transport

    def receive(self, data: bytes) -> None:
        self.transport.protocol.dataReceived(data)

    def closing(self) -> bool:
        return bool(self.transport.disconnecting)


@pytest.fixture
def http_connection(tmp_path: Any) -> Any:
    """
    A connection to the site of a daemon whose C{header_timeout} and
    C{idle_timeout} are 1 s, the built-in services loaded; its protocol
    learns that the connection is lost after the test.
    """
    clock = MemoryReactorClock()
    middleware = Middleware(clock, tmp_path, settings=Settings(header_timeout=1, idle_timeout=1))
    middleware.add_services(BUILTIN_SERVICES)
    channel = make_site(middleware).buildProtocol(PEER)
    transport = Transport(peerAddress=PEER)
    transport.protocol = channel
    channel.makeConnection(transport)
    yield HttpConnection(clock, transport)
    transport.protocol.connectionLost(Failure(ConnectionDone()))


def test_websocket_outlives_the_http_timeouts(http_connection: HttpConnection) -> None:
    # An upgraded WebSocket is no HTTP request any more: neither the header
    # deadline nor the idle timeout (1 s here) applies to it.
    conn = http_connection
    conn.receive(UPGRADE)
    assert conn.transport.value().startswith(b"HTTP/1.1 101 ")
    conn.transport.clear()
    conn.clock.advance(2.5)
    assert not conn.closing() and conn.transport.value() == b""
    conn.receive(client_frame('{"jsonrpc": "2.0", "id": 1, "method": "core.ping"}'))
    [(opcode, payload)] = server_frames(conn.transport.value())
    assert json.loads(payload) == {"jsonrpc": "2.0", "id": 1, "result": "pong"}


def test_a_request_and_a_frame_split_across_reads_are_read_whole(http_connection: HttpConnection) -> None:
    """
    The upgrade request and then a WebSocket frame, each arriving a byte a
    read, are one request and one call; the header deadline is over once
    the headers are in.
    """
    conn = http_connection
    for byte in UPGRADE:
        conn.receive(bytes([byte]))
    head = conn.transport.value()
    assert head.startswith(b"HTTP/1.1 101 ") and head.count(b"HTTP/1.1") == 1
    conn.transport.clear()
    conn.clock.advance(5)
    for byte in client_frame('{"jsonrpc": "2.0", "id": 1, "method": "core.ping"}'):
        conn.receive(bytes([byte]))
    [(opcode, payload)] = server_frames(conn.transport.value())
    assert json.loads(payload) == {"jsonrpc": "2.0", "id": 1, "result": "pong"}
    assert not conn.closing()


def test_trickled_headers_meet_the_deadline(
    http_connection: HttpConnection, log_events: list[dict[str, Any]]
) -> None:
    # Finding 4: a header every little while kept a connection forever.
    conn = http_connection
    conn.receive(b"GET / HTTP/1.1\r\n")
    for _ in range(4):
        conn.clock.advance(0.2)
        conn.receive(b"X-Slow: 1\r\n")
    conn.clock.advance(0.19)
    assert not conn.closing() and conn.transport.value() == b""
    conn.clock.advance(0.01)
    assert conn.closing()
    assert conn.transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    [line] = [e for e in log_events if "request headers took more than" in e.get("log_format", "")]
    assert line["address"] == "192.0.2.7"


@pytest.mark.parametrize("line", [b"GET /" + b"a" * 20_000 + b" HTTP/1.1", b"X-Big: " + b"a" * 20_000])
def test_a_line_too_long_is_answered(http_connection: HttpConnection, line: bytes) -> None:
    """
    A request line or header line past twisted.web's 16 KiB gets a 431
    before the connection is closed, not a silent close.
    """
    conn = http_connection
    head = line + b"\r\n" if line.startswith(b"GET") else b"GET / HTTP/1.1\r\n" + line + b"\r\n"
    conn.receive(head)
    assert conn.transport.value().startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert conn.closing()


def test_silent_connection_meets_the_deadline(http_connection: HttpConnection) -> None:
    conn = http_connection
    conn.clock.advance(0.99)
    assert not conn.closing()
    conn.clock.advance(0.01)
    assert conn.closing() and conn.transport.value().startswith(b"HTTP/1.1 408 ")


def test_idle_keep_alive_connection_is_closed(http_connection: HttpConnection) -> None:
    conn = http_connection
    conn.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.transport.value().startswith(b"HTTP/1.1 200 ")
    conn.transport.clear()
    conn.clock.advance(0.99)
    assert not conn.closing()
    # Then nothing: closed after the idle timeout, without a 408.
    conn.clock.advance(0.01)
    assert conn.closing() and b"408" not in conn.transport.value()


# -- in memory ------------------------------------------------------------------------


def test_limits_count_in_all_and_per_address() -> None:
    limits = ConnectionLimits(Clock(), total=3, per_address=2)
    assert limits.refusal("a") is None
    limits.opened("a")
    limits.opened("a")
    assert "from this address" in (limits.refusal("a") or "")
    assert limits.refusal("b") is None
    limits.opened("b")
    assert "3 connections are open" in (limits.refusal("c") or "")
    limits.closed("a")
    assert limits.refusal("a") is None and limits.open_from("a") == 1
    limits.closed("a")
    limits.closed("b")
    assert limits.open == 0 and limits._by_address == {}


def test_refusal_log_is_rate_limited(log_events: list[dict[str, Any]]) -> None:
    clock = Clock()
    refusals = RefusalLog(clock, interval=10)
    for i in range(1000):
        refusals.refused("Refused {address}", address=f"10.0.{i // 256}.{i % 256}")
    clock.advance(10)
    refusals.refused("Refused {address}", address="10.9.9.9")
    lines = [e for e in log_events if e.get("log_format", "").startswith("Refused {address}")]
    assert [(e["address"], e["unlogged"]) for e in lines] == [("10.0.0.0", 0), ("10.9.9.9", 999)]


def test_refused_tcp_connection_is_cut_if_it_does_not_let_go() -> None:
    from twisted.internet.testing import StringTransport
    from twisted.web.server import Site
    from twisted.web.resource import Resource

    from midjobs.http import LimitedFactory

    clock = Clock()
    limits = ConnectionLimits(clock, total=1, per_address=1)
    factory = LimitedFactory(Site(Resource()), limits)
    address = IPv4Address("TCP", "192.0.2.1", 1)
    admitted = factory.buildProtocol(address)
    admitted.makeConnection(StringTransport(peerAddress=address))
    assert limits.open == 1
    refused = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    refused.makeConnection(transport)
    assert transport.value().startswith(b"HTTP/1.1 503 ")
    assert transport.disconnecting and not transport.disconnected
    clock.advance(1)
    assert transport.disconnected
    assert limits.open == 1
    admitted.connectionLost(Failure(Exception("gone")))
    assert limits.open == 0


def test_descriptor_limit_is_raised_and_keeps_a_reserve() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and hard > 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
            assert raise_descriptor_limit() == hard
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert connection_capacity(1024) == 1024 - RESERVE
    assert connection_capacity(65536) == 65536 - 6553
    assert connection_capacity(100) == 1


@pytest_twisted.ensureDeferred
async def test_caps_that_do_not_fit_are_lowered(
    settings: Settings, monkeypatch: Any, log_events: list[dict[str, Any]]
) -> None:
    from midjobs import daemon as daemon_module
    from midjobs.daemon import Daemon

    monkeypatch.setattr(daemon_module, "raise_descriptor_limit", lambda: 1024)
    service = Daemon(attrs.evolve(settings, max_connections=5000, max_connections_per_address=2000), reactor)
    service.startService()
    await service.ready
    try:
        limits = service.connection_limits
        assert (limits.total, limits.per_address) == (1024 - RESERVE, 1024 - RESERVE)
        [warning] = [e for e in log_events if "does not fit under the limit" in e.get("log_format", "")]
        assert (warning["configured"], warning["capacity"]) == (5000, 1024 - RESERVE)
    finally:
        await service.stopService()


def test_sockets_systemd_hands_over_are_counted() -> None:
    """
    A C{systemd:} listener's socket (C{adoptStreamPort}) counts its
    connections when it is an Internet one; a UNIX one never does.
    """
    from socket import AF_INET, AF_INET6, AF_UNIX

    from twisted.internet.protocol import Factory

    from midjobs.http import LimitingReactor
    from midjobs.http._limits import LimitedFactory

    adopted: list[tuple[int, Any, Any]] = []

    class Reactor:
        def adoptStreamPort(self, fd: int, family: Any, factory: Any) -> None:
            adopted.append((fd, family, factory))

    limits = ConnectionLimits(Clock(), total=3, per_address=2)
    listening = LimitingReactor(Reactor(), limits)
    factory = Factory.forProtocol(Protocol)
    for fd, family in enumerate((AF_INET, AF_INET6, AF_UNIX), start=3):
        listening.adoptStreamPort(fd, family, factory)
    wrapped = [type(f) for _, _, f in adopted]
    assert wrapped == [LimitedFactory, LimitedFactory, Factory]
    assert all(f.wrappedFactory is factory for _, _, f in adopted[:2])
