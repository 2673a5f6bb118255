"""
The Autobahn protocol under a L{Client}: it only moves text frames.
"""

from __future__ import annotations

from typing import cast

from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITCPTransport
from zope.interface import Interface

from ._errors import ClientConnectFailed

__all__ = ["ClientProtocol", "IMessageReceiver"]


class IMessageReceiver(Interface):
    """
    What a L{ClientProtocol} tells the one who reads its messages (a
    L{midjobs.client.Client}).
    """

    def protocol_opened(protocol: ClientProtocol) -> None:
        """
        The opening handshake of C{protocol} is done: send through it.
        """

    def message_received(payload: bytes) -> None:
        """
        One whole message arrived (UTF-8 text).
        """

    def connection_lost(reason: str) -> None:
        """
        The connection ended, for C{reason}; nothing more arrives.
        """


class ClientProtocol(WebSocketClientProtocol):
    """
    Hands each message to its L{IMessageReceiver} and tells it when the
    connection ends.

    @ivar opened: fires with C{self} once the opening handshake is done, or
        fails with L{ClientConnectFailed}; cancelling it aborts the connection.
    """

    def __init__(self, receiver: IMessageReceiver) -> None:
        super().__init__()
        self.receiver = receiver
        self.opened: Deferred[ClientProtocol] = Deferred(self._cancelOpen)

    def _cancelOpen(self, _: Deferred[ClientProtocol]) -> None:
        if self.transport is not None:
            # Twisted's UNIX transports have it too, though IUNIXTransport does not say so.
            cast(ITCPTransport, self.transport).abortConnection()

    def onOpen(self) -> None:
        self.receiver.protocol_opened(self)
        if not self.opened.called:
            self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.receiver.message_received(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        text = reason or ("connection closed" if wasClean else "connection lost")
        if not self.opened.called:
            self.opened.errback(ClientConnectFailed(text))
        self.receiver.connection_lost(text)
