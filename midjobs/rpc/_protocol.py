# Autobahn is unannotated.
# mypy: allow-untyped-calls
"""
The WebSocket protocol: one message in, one call to the middleware, one answer out.

The handshake is refused with 403 when a browser page from another origin
opens it (L{OriginPolicy}); its HTTP errors carry the security headers of
every other response.

Everything a connection sends (answers and events) goes through its
L{Outbox}, the transport's push producer: a client that does not read is
sent nothing more, and one that lets more than C{[limits] event_queue}
bytes wait is closed with 1008 (policy violation), "event queue limit
exceeded".  A connection that has not logged in C{[limits] login_timeout}
seconds after it opened (or after it logged out) is closed with 1008,
"Login timeout".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, cast

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.address import UNIXAddress
from twisted.internet.interfaces import IDelayedCall, IPushProducer, ISSLTransport
from twisted.python.failure import Failure

from ..addresses import client_address, proxy_networks
from ..arguments import MAX_CALL_SIZE
from ..auth import login, peer_credentials
from ..config import Settings
from ..job import Job
from ..logs import logger
from ..counts import NO_COUNTS
from ..security_headers import security_header_lines
from ._jsonrpc import TOO_MANY_CONCURRENT_CALLS, Request, RpcError, error_for, parse_request, result_response
from ..origins import OriginPolicy
from ._outbox import Outbox
from ._session import Session

if TYPE_CHECKING:
    from ..middleware import Middleware

__all__ = ["RpcProtocol", "RpcServerFactory"]

log = logger(__name__)

#: Largest message before and after login (C{docs/limits.rst}, "The table").
MAX_MESSAGE_ANONYMOUS = 8 * 1024
MAX_MESSAGE_AUTHENTICATED = MAX_CALL_SIZE
#: Calls one connection may have in flight.
MAX_CALLS_IN_FLIGHT = 20
#: Bytes of one connection's input handled in one turn of the reactor; the
#: rest of a read waits for the next turns, with the connection's reading
#: paused, so that a client pipelining thousands of calls takes no more than
#: its share of the daemon.
BYTES_PER_TURN = 1024
#: Seconds a peer has to answer the daemon's close before it is dropped.
CLOSE_HANDSHAKE_TIMEOUT = 5


class RpcProtocol(WebSocketServerProtocol):
    """
    JSON-RPC 2.0 over one WebSocket connection.
    """

    factory: RpcServerFactory
    session: Session
    outbox: Outbox
    #: Closes the connection if nobody logs in on it in time (C{None}: logged in, or closed).
    _login_deadline: IDelayedCall | None = None

    @property
    def _secure(self) -> bool:
        """
        Whether the connection is TLS (an C{ssl:} listener).
        """
        return self.transport is not None and ISSLTransport.providedBy(self.transport)

    def connectionMade(self) -> None:
        #: What was read past a turn's share, handled in the next turns.
        self._backlog: list[bytes] = []
        super().connectionMade()

    # Autobahn waits for a Deferred from onConnect (as documented); its
    # annotation names only the synchronous answers.
    def onConnect(self, request: Any) -> Deferred[None]:  # type: ignore[override]
        """
        Accept the handshake unless its C{Origin} is refused; start the
        session, logged in already for a trusted local peer.
        """
        assert self.transport is not None
        self._check_origin(request)
        self._limit_messages(MAX_MESSAGE_ANONYMOUS)
        self.outbox = Outbox(self._write_message, self.factory.settings.max_event_queue, self._outbox_overflowed)
        self.session = Session(
            self.factory.middleware,
            # Behind a trusted reverse proxy, the client it names.
            client_address(self.transport.getPeer(), request.headers.get, self.factory.trusted_proxies),
            self.outbox,
            self._logged_in,
            self._start_login_deadline,
        )
        self._in_flight = 0
        metrics = self.factory.metrics
        if metrics is not None:
            metrics.connection_opened(self.session, self._transport_kind())
        return ensureDeferred(self._trust_local_peer())

    def _transport_kind(self) -> str:
        """
        The C{transport} label of this connection: C{tls}, C{unix} or C{tcp}.
        """
        if self._secure:
            return "tls"
        assert self.transport is not None
        if isinstance(self.transport.getHost(), UNIXAddress):
            return "unix"
        return "tcp"

    def onOpen(self) -> None:
        """
        Make the outbox the transport's producer; give a connection that is
        not logged in (a trusted local peer is by now) its deadline.
        """
        try:
            self.registerProducer(self.outbox, True)
        except RuntimeError:
            # twisted.web's channel, which handed the transport over, is
            # still its producer: the connection is ours now.
            self.unregisterProducer()
            self.registerProducer(self.outbox, True)
        if self.session.user is None:
            self._start_login_deadline()

    def _start_login_deadline(self) -> None:
        if self._login_deadline is None and self.session.open:
            self._login_deadline = self.factory.reactor.callLater(
                self.factory.settings.login_timeout, self._login_timed_out
            )

    def _cancel_login_deadline(self) -> None:
        if self._login_deadline is not None:
            if self._login_deadline.active():
                self._login_deadline.cancel()
            self._login_deadline = None

    def _logged_in(self) -> None:
        self._cancel_login_deadline()
        self._limit_messages(MAX_MESSAGE_AUTHENTICATED)

    def _login_timed_out(self) -> None:
        self._login_deadline = None
        if self.session.user is not None or not self.session.open:
            return
        log.warn(
            "Closed a WebSocket from {peer}: not logged in within {timeout} s",
            peer=self.session.peer,
            timeout=self.factory.settings.login_timeout,
        )
        self.factory.counts.limit_hit("login_timeout")
        self._close_for_policy("Login timeout")

    def _outbox_overflowed(self, queued: int) -> None:
        session = self.session
        log.warn(
            "Closed the WebSocket of {user} from {peer}: {queued} bytes of events and answers waiting, "
            "past the event queue limit of {limit}",
            user=session.user.username if session.user is not None else "anonymous",
            peer=session.peer,
            queued=queued,
            limit=self.outbox.limit,
        )
        self.factory.counts.limit_hit("event_queue")
        # Its subscriptions end now, not when the closing handshake ends.
        session.closed()
        self._close_for_policy("event queue limit exceeded")

    def _close_for_policy(self, reason: str) -> None:
        """
        Close with 1008 (policy violation) and C{reason}.  Autobahn's
        C{sendClose} takes only 1000 and 3000-4999 from an application; its
        own closes (1009 for a message too big, say) go through
        C{sendCloseFrame}, and so does this one.  A peer that does not
        answer the close is dropped after the factory's C{closeHandshakeTimeout}.
        """
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(
                code=self.CLOSE_STATUS_CODE_POLICY_VIOLATION, reasonUtf8=reason.encode("utf-8"), isReply=False
            )

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
        headers = [*(responseHeaders or ()), *security_header_lines(self._secure)]
        super().sendHttpErrorResponse(code, reason, headers)

    async def _trust_local_peer(self) -> None:
        """
        Log in a UNIX-socket peer whose uid the daemon trusts (C{docs/protocol.rst}, "Connecting").
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
        """
        Handle the first L{BYTES_PER_TURN} of C{data} now, the rest in the
        next turns of the reactor, reading nothing more meanwhile.
        """
        if self._backlog:
            self._backlog.append(data)
            return
        if len(data) > BYTES_PER_TURN:
            self._backlog.append(data[BYTES_PER_TURN:])
            data = data[:BYTES_PER_TURN]
            self._reading.pauseProducing()
            self.factory.reactor.callLater(0, self._work_off_backlog)
        super().dataReceived(data)

    def _work_off_backlog(self) -> None:
        if self.state == self.STATE_CLOSED:
            self._backlog.clear()
            return
        data = b"".join(self._backlog)
        self._backlog.clear()
        if len(data) > BYTES_PER_TURN:
            self._backlog.append(data[BYTES_PER_TURN:])
            data = data[:BYTES_PER_TURN]
            self.factory.reactor.callLater(0, self._work_off_backlog)
        else:
            self._reading.resumeProducing()
        super().dataReceived(data)

    @property
    def _reading(self) -> IPushProducer:
        """
        The transport, as the producer of what the connection reads.
        """
        return cast(IPushProducer, self.transport)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._cancel_login_deadline()
        session = getattr(self, "session", None)
        if session is not None:
            session.closed()
            self.outbox.stopProducing()

    def _send_text(self, text: str) -> None:
        """
        Send an answer, after whatever the outbox holds.
        """
        if self.session.open:
            self.outbox.send_response(text.encode("utf-8"))

    def _write_message(self, payload: bytes) -> None:
        """
        Write one message the outbox lets go.
        """
        if self.state != self.STATE_OPEN:
            return
        # Autobahn applies the incoming size limit to outgoing messages too;
        # the limit is the client's, not ours.
        limit = self.maxMessagePayloadSize
        self.maxMessagePayloadSize = 0
        try:
            self.sendMessage(payload, isBinary=False)
        finally:
            self.maxMessagePayloadSize = limit

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            request = parse_request(payload)
        except RpcError as e:
            self._send_text(e.response())
            return
        if self._in_flight >= MAX_CALLS_IN_FLIGHT:
            self.factory.counts.limit_hit("calls_in_flight")
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
        d.addCallbacks(self._returned, self._raised, callbackArgs=(request,), errbackArgs=(request,))

    def _returned(self, result: Any, request: Request) -> None:
        """
        The call returned C{result}: answer with it or, for a job method's
        job, with its id (legacy jobs) or, once the job has ended, its result.
        """
        if isinstance(result, Job):
            if self.session.legacy_jobs or request.is_notification:
                result = result.id
            elif not result.state.finished:
                result.wait(raise_error=True).addCallbacks(
                    self._succeeded, self._raised, callbackArgs=(request,), errbackArgs=(request,)
                )
                return
            else:
                try:
                    result = result.outcome(raise_error=True)
                except BaseException:
                    self._raised(Failure(), request)
                    return
        self._succeeded(result, request)

    def _succeeded(self, result: Any, request: Request) -> None:
        self._answer(self._result_response, result, request)

    def _raised(self, failure: Failure, request: Request) -> None:
        self._answer(self._error_response, failure, request)

    def _result_response(self, result: Any, request: Request) -> str:
        try:
            response = result_response(request.response_id, result)
        except RpcError:
            return self._error_response(Failure(), request)
        metrics = self.factory.metrics
        if metrics is not None:
            metrics.rpc_call(request.method, "success")
        return response

    def _error_response(self, failure: Failure, request: Request) -> str:
        metrics = self.factory.metrics
        if metrics is not None:
            metrics.rpc_call(request.method, "error")
        error = failure.value
        if isinstance(error, RpcError):
            return error.response()
        if isinstance(error, Exception):
            return error_for(error, request.response_id).response()
        return failure  # type: ignore[return-value]

    def _answer(self, respond: Callable[[Any, Request], str | Failure], outcome: Any, request: Request) -> None:
        """
        Send the answer C{respond(outcome, request)} makes (none to a
        notification); the call is no longer in flight.
        """
        try:
            response = respond(outcome, request)
            if isinstance(response, Failure):
                log.failure("Unhandled error answering {method}", response, method=request.method)
            elif not request.is_notification:
                self._send_text(response)
        except Exception:
            log.failure("Unhandled error answering {method}", method=request.method)
        finally:
            self._in_flight -= 1


class RpcServerFactory(WebSocketServerFactory):
    """
    Makes an L{RpcProtocol} for each WebSocket connection to the middleware.

    @ivar reactor: the middleware's; the login deadlines run on it.
    @ivar origins: the C{Origin} check of the handshakes, from the
        middleware's settings (C{allowed_origins}).
    """

    # Twisted's Factory types protocol as returning one of its own protocols.
    protocol = RpcProtocol  # type: ignore[assignment]

    def __init__(self, middleware: Middleware, **kwargs: Any) -> None:
        kwargs.setdefault("reactor", getattr(middleware, "reactor", None))
        super().__init__(**kwargs)
        self.middleware = middleware
        #: The middleware's metrics (C{None} for a middleware without, in tests); C{counts} counts limits.
        self.metrics = getattr(middleware, "metrics", None)
        self.counts = self.metrics if self.metrics is not None else NO_COUNTS
        settings = getattr(middleware, "settings", None)
        #: The limits of the connections (the defaults if the middleware has no settings).
        self.settings: Settings = settings if settings is not None else Settings()
        self.origins = OriginPolicy.from_strings(getattr(settings, "allowed_origins", ()))
        self.trusted_proxies = proxy_networks(self.settings.trusted_proxies)
        self.setProtocolOptions(
            # The origin check is RpcProtocol's (a 403 for any it refuses),
            # "null" included; no status page for a GET without Upgrade.
            allowNullOrigin=True,
            webStatus=False,
            maxMessagePayloadSize=MAX_MESSAGE_ANONYMOUS,
            maxFramePayloadSize=MAX_MESSAGE_ANONYMOUS,
            autoPingInterval=30,
            autoPingTimeout=60,
            # A connection the daemon closes (its event queue, its login
            # deadline) may be behind by the socket buffers' worth of
            # messages: time to read up to the close before it is dropped.
            closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
            # Close an oversized message's connection with 1009 and a reason.
            failByDrop=False,
        )
