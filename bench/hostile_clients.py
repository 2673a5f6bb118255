"""
The attackers' clients for bench/hostile.py: raw WebSocket JSON-RPC and raw
HTTP connections from a chosen source address, that do exactly what an
attack needs (pipeline calls, stop reading, trickle bytes) and never wait
for the daemon unless asked to.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Callable

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet.protocol import ClientFactory, Protocol

__all__ = ["RPCConnection", "Pool", "TrickleHTTP", "open_rpc", "open_http"]

#: Called with each answer (a decoded JSON-RPC response) of an RPC connection.
AnswerCallback = Callable[[dict[str, Any]], None]


class RPCConnection(WebSocketClientProtocol):
    """
    A WebSocket JSON-RPC connection.  L{send} writes a call at once whatever
    is in flight; L{call} also returns a Deferred of its answer.
    """

    factory: _RPCFactory

    def onOpen(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, defer.Deferred[dict[str, Any]]] = {}
        self.answers = 0
        self.errors = 0
        self.events = 0
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.factory.opened(self)

    def send(self, method: str, *params: Any) -> int:
        request_id = next(self._ids)
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        self.sendMessage(json.dumps(message).encode(), isBinary=False)
        return request_id

    def call(self, method: str, *params: Any) -> defer.Deferred[dict[str, Any]]:
        """
        Send a call; fires with its whole answer (C{result} or C{error}).
        """
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._waiting[self.send(method, *params)] = d
        return d

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        if "method" in message:
            self.events += 1  # a notification: an event
            return
        self.answers += 1
        if "error" in message:
            self.errors += 1
        waiter = self._waiting.pop(message["id"], None) if isinstance(message.get("id"), int) else None
        if waiter is not None:
            waiter.callback(message)

    def stop_reading(self) -> None:
        """
        Read nothing more: the daemon's writes to this connection pile up.
        """
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        """
        Read again (after L{stop_reading}): what piled up, then whatever comes.
        """
        self.transport.resumeProducing()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code = code
        self.close_reason = reason
        waiting, self._waiting = getattr(self, "_waiting", {}), {}
        for d in waiting.values():
            d.errback(ConnectionError(f"closed: {code} {reason}"))
        closed = getattr(self, "closed", None)
        if closed is not None and not closed.called:
            closed.callback(None)
        self.factory.lost(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()


class _RPCFactory(WebSocketClientFactory):
    protocol = RPCConnection

    def __init__(self, url: str, reactor: Any, timeout: float) -> None:
        super().__init__(url=url, reactor=reactor)
        self.setProtocolOptions(utf8validateIncoming=False, openHandshakeTimeout=0, maxMessagePayloadSize=0)
        self.ready: defer.Deferred[RPCConnection] = defer.Deferred()
        self.ready.addTimeout(timeout, reactor)

    def opened(self, connection: RPCConnection) -> None:
        if not self.ready.called:
            self.ready.callback(connection)

    def lost(self, connection: RPCConnection) -> None:
        if not self.ready.called:
            self.ready.errback(ConnectionError("closed before the WebSocket opened"))

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(reason)


def open_rpc(reactor: Any, host: str, port: int, source: str, timeout: float = 10) -> defer.Deferred[RPCConnection]:
    """
    Open a WebSocket to C{/api/current} from the address C{source}.
    """
    factory = _RPCFactory(f"ws://{host}:{port}/api/current", reactor, timeout)
    reactor.connectTCP(host, port, factory, timeout=timeout, bindAddress=(source, 0))
    return factory.ready


class TrickleHTTP(Protocol):
    """
    A raw HTTP connection: the attack writes what it wants; answers are counted.
    """

    def __init__(self) -> None:
        self.received = 0
        self.connected_: defer.Deferred[TrickleHTTP] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.is_open = False

    def connectionMade(self) -> None:
        self.is_open = True
        self.connected_.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason: Any) -> None:
        self.is_open = False
        if not self.lost.called:
            self.lost.callback(None)

    def write(self, data: bytes) -> None:
        if self.is_open:
            self.transport.write(data)

    def abort(self) -> None:
        if self.is_open:
            self.transport.abortConnection()


class _HTTPFactory(ClientFactory):
    def __init__(self) -> None:
        self.connection = TrickleHTTP()

    def buildProtocol(self, addr: Any) -> TrickleHTTP:
        return self.connection

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.connection.connected_.errback(reason)


def open_http(reactor: Any, host: str, port: int, source: str, timeout: float = 10) -> defer.Deferred[TrickleHTTP]:
    """
    Open a TCP connection to the daemon's HTTP port from C{source}.
    """
    factory = _HTTPFactory()
    reactor.connectTCP(host, port, factory, timeout=timeout, bindAddress=(source, 0))
    return factory.connection.connected_


class Pool:
    """
    The connections an attack holds, aborted all at once when it ends, and
    how many it tried, got, and lost.
    """

    def __init__(self) -> None:
        self.held: list[Any] = []
        self.tried = 0
        self.refused = 0

    async def add(self, opening: defer.Deferred[Any]) -> Any | None:
        self.tried += 1
        try:
            connection = await opening
        except Exception:
            self.refused += 1
            return None
        self.held.append(connection)
        return connection

    def open_count(self) -> int:
        return sum(1 for c in self.held if getattr(c, "transport", None) is not None and c.transport.connected)

    def abort_all(self) -> None:
        for connection in self.held:
            try:
                connection.abort()
            except Exception:
                pass
        self.held = []
