"""
The WebSocket protocol: one message in, one call to the middleware, one answer out.

The handshake is refused with 403 when a browser page from another origin
opens it (L{OriginPolicy}); its HTTP errors carry the security headers of
every other response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.python.failure import Failure
from twisted.internet.interfaces import ISSLTransport
from ..logs import logger

from ..auth import login, peer_credentials
from ..job import Job
from ._jsonrpc import TOO_MANY_CONCURRENT_CALLS, Request, RpcError, error_for, parse_request, result_response
from ._origin import OriginPolicy
from ._session import Session

if TYPE_CHECKING:
    from ..middleware import Middleware

__all__ = ["RpcProtocol", "RpcServerFactory"]

log = logger(__name__)

#: Largest message before and after login (PROTOCOL.md).
MAX_MESSAGE_ANONYMOUS = 8 * 1024
MAX_MESSAGE_AUTHENTICATED = 64 * 1024
#: Calls one connection may have in flight.
MAX_CALLS_IN_FLIGHT = 20


class RpcProtocol(WebSocketServerProtocol):
    """
    JSON-RPC 2.0 over one WebSocket connection.
    """

    factory: RpcServerFactory
    session: Session

    @property
    def _secure(self) -> bool:
        """
        Whether the connection is TLS (an C{ssl:} listener).
        """
        return self.transport is not None and ISSLTransport.providedBy(self.transport)

    def onConnect(self, request: Any) -> Deferred[None]:
        """
        Accept the handshake unless its C{Origin} is refused; start the
        session, logged in already for a trusted local peer.
        """
        self._check_origin(request)
        self._limit_messages(MAX_MESSAGE_ANONYMOUS)
        self.session = Session(
            self.factory.middleware,
            self.transport.getPeer(),
            self._send_text,
            lambda: self._limit_messages(MAX_MESSAGE_AUTHENTICATED),
        )
        self._in_flight = 0
        return ensureDeferred(self._trust_local_peer())

    def _check_origin(self, request: Any) -> None:
        """
        Refuse the handshake of a page from a foreign origin (see L{OriginPolicy}).

        @raise ConnectionDeny: 403, the C{Origin} is not allowed.
        """
        headers = request.headers
        origin, host = headers.get("origin"), headers.get("host")
        if self.factory.origins.allows(origin, host, self._secure):
            return
        log.warn(
            "Refused a WebSocket from {peer}: origin {origin!r} is not allowed for host {host!r}",
            peer=request.peer,
            origin=origin,
            host=host,
        )
        raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "Origin not allowed")

    def sendHttpErrorResponse(self, code: int, reason: str, responseHeaders: Any = None) -> None:
        """
        Refuse the handshake with HTTP C{code}, with the security headers.
        """
        # Imported here: midjobs.http imports this package.
        from ..http._headers import security_header_lines

        headers = [*(responseHeaders or ()), *security_header_lines(self._secure)]
        super().sendHttpErrorResponse(code, reason, headers)

    async def _trust_local_peer(self) -> None:
        """
        Log in a UNIX-socket peer whose uid the daemon trusts (DESIGN.md).
        """
        credentials = peer_credentials(self.transport)
        portal = self.factory.middleware.portal
        if credentials is None or portal is None:
            return
        try:
            user = await login(portal, credentials)
        except Exception:
            return
        self.session.login(user)

    def _limit_messages(self, size: int) -> None:
        self.maxMessagePayloadSize = size
        self.maxFramePayloadSize = size

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's own formats a debug message for every read, whether it
        # is logged or not: a tenth of the daemon's time on small calls.
        self._dataReceived(data)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            session.closed()

    def _send_text(self, text: str) -> None:
        if not self.session.open:
            return
        # Autobahn applies the incoming size limit to outgoing messages too;
        # the limit is the client's, not ours.
        limit = self.maxMessagePayloadSize
        self.maxMessagePayloadSize = 0
        try:
            self.sendMessage(text.encode("utf-8"), isBinary=False)
        finally:
            self.maxMessagePayloadSize = limit

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            request = parse_request(payload)
        except RpcError as e:
            self._send_text(e.response())
            return
        if self._in_flight >= MAX_CALLS_IN_FLIGHT:
            if not request.is_notification:
                self._send_text(
                    RpcError(
                        TOO_MANY_CONCURRENT_CALLS,
                        f"Maximum number of concurrent calls ({MAX_CALLS_IN_FLIGHT}) has exceeded",
                        id=request.id,
                    ).response()
                )
            return
        self._in_flight += 1
        # Deferred callbacks, not a coroutine: a call that is answered at once
        # (most are) runs through without one more Deferred and frame.
        try:
            d = self.factory.middleware.call_from(
                self.session, request.method, request.params, message_id=request.response_id
            )
        except Exception:
            d = fail()
        d.addCallback(self._job_outcome, request)
        d.addCallback(self._result_response, request)
        d.addErrback(self._error_response, request)
        d.addCallback(self._respond, request)
        d.addErrback(lambda f: log.failure("Unhandled error answering {method}", f, method=request.method))
        d.addBoth(self._answered)

    def _job_outcome(self, result: Any, request: Request) -> Any:
        """
        What a call's answer carries: a job method's job id (legacy jobs) or,
        once the job has ended, its result; any other method's result.
        """
        if not isinstance(result, Job):
            return result
        if self.session.legacy_jobs or request.is_notification:
            return result.id
        if result.state.finished:
            return result.outcome(raise_error=True)
        return result.wait(raise_error=True)

    @staticmethod
    def _result_response(result: Any, request: Request) -> str:
        return result_response(request.response_id, result)

    @staticmethod
    def _error_response(failure: Failure, request: Request) -> str:
        error = failure.value
        if isinstance(error, RpcError):
            return error.response()
        if isinstance(error, Exception):
            return error_for(error, request.response_id).response()
        return failure  # type: ignore[return-value]

    def _respond(self, response: str, request: Request) -> None:
        if not request.is_notification:
            self._send_text(response)

    def _answered(self, _: object) -> None:
        self._in_flight -= 1


class RpcServerFactory(WebSocketServerFactory):
    """
    Makes an L{RpcProtocol} for each WebSocket connection to the middleware.

    @ivar origins: the C{Origin} check of the handshakes, from the
        middleware's settings (C{allowed_origins}).
    """

    protocol = RpcProtocol

    def __init__(self, middleware: Middleware, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.middleware = middleware
        settings = getattr(middleware, "settings", None)
        self.origins = OriginPolicy.from_strings(getattr(settings, "allowed_origins", ()))
        self.setProtocolOptions(
            # The origin check is RpcProtocol's (a 403 for any it refuses),
            # "null" included; no status page for a GET without Upgrade.
            allowNullOrigin=True,
            webStatus=False,
            maxMessagePayloadSize=MAX_MESSAGE_ANONYMOUS,
            maxFramePayloadSize=MAX_MESSAGE_ANONYMOUS,
            autoPingInterval=30,
            autoPingTimeout=60,
            # Close an oversized message's connection with 1009 and a reason.
            failByDrop=False,
        )
