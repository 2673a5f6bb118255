"""
The Autobahn protocol under a L{Client}: it only moves text frames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet.defer import Deferred

from ._errors import ClientConnectFailed

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["ClientProtocol"]


class ClientProtocol(WebSocketClientProtocol):
    """
    Hands each message to its L{Client} and tells it when the connection ends.

    @ivar opened: fires with C{self} once the opening handshake is done, or
        fails with L{ClientConnectFailed}; cancelling it aborts the connection.
    """

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client
        self.opened: Deferred[ClientProtocol] = Deferred(self._cancelOpen)

    def _cancelOpen(self, _: Deferred[Any]) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def onOpen(self) -> None:
        self.client._attach(self)
        if not self.opened.called:
            self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.client._received(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        text = reason or ("connection closed" if wasClean else "connection lost")
        if not self.opened.called:
            self.opened.errback(ClientConnectFailed(text))
        self.client._lost(text)
