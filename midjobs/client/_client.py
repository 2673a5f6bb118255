"""
The client: JSON-RPC calls, event subscriptions and jobs over one WebSocket.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from midjobs import wire_json
from midjobs.arguments import REDACTED

from ._endpoint import ClientTLSError, client_endpoint, tls_failure_reason
from ._errors import (
    ClientCallError,
    ClientConnectionLost,
    ClientError,
    JSONRPCError,
    error_from_data,
    error_from_response,
)
from ._jobs import JobWatcher
from ._protocol import ClientProtocol, IMessageReceiver
from ._types import EventCallback, JobCallback

__all__ = ["Client", "connect"]

_log = Logger()


def connect(
    uri: str,
    *,
    reactor: IReactorTime | None = None,
    timeout: float = 10,
    insecure: bool = False,
    ca_file: str | None = None,
    call_timeout: float | None = None,
    headers: dict[str, str] | None = None,
) -> Deferred[Client]:
    """
    Connect to a midjobs daemon and finish the WebSocket handshake.

    @param uri: C{ws://host:port/api/current}, C{wss://...} or
        C{ws+unix:///path/to/midjobs.sock}.
    @param reactor: the reactor that connects (over TCP or a UNIX socket)
        and keeps time; Twisted's global one by default.
    @param timeout: seconds for the connection and the handshake together.
    @param insecure: for C{wss://}, do not verify the server's certificate.
    @param ca_file: for C{wss://}, a PEM file of the certificate authorities
        to trust instead of the system's (for a daemon whose certificate a
        private CA signed, or a self-signed one).
    @param call_timeout: the new client's L{Client.call_timeout}.
    @param headers: more HTTP headers for the handshake.
    @return: fires with a connected L{Client}; fails with Twisted's
        C{ConnectError} family (refused, no such socket, timeout...),
        L{ClientTLSError} if the TLS handshake fails (the certificate
        could not be verified), L{ClientConnectFailed} if the WebSocket
        handshake fails, or C{ValueError} for a bad URI or C{ca_file}.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        endpoint, url = client_endpoint(uri, reactor, timeout=timeout, insecure=insecure, ca_file=ca_file)
    except ValueError:
        return fail()
    client = Client(reactor, call_timeout=call_timeout)
    factory = _ClientFactory(client, url=url, reactor=reactor, headers=headers)
    # Our own timeout covers the handshake: Autobahn's rounds to whole seconds.
    factory.setProtocolOptions(openHandshakeTimeout=0)  # type: ignore[no-untyped-call]  # Autobahn is not annotated

    async def open_() -> Client:
        protocol = await endpoint.connect(factory)
        assert isinstance(protocol, ClientProtocol)  # what the factory builds
        await protocol.opened
        return client

    return Deferred.fromCoroutine(open_()).addTimeout(timeout, reactor)


class _ClientFactory(WebSocketClientFactory):
    """
    Makes the one L{ClientProtocol} of a L{Client}.
    """

    def __init__(
        self, client: Client, *, url: str, reactor: IReactorTime, headers: dict[str, str] | None
    ) -> None:
        super().__init__(url=url, reactor=reactor, headers=headers)  # type: ignore[no-untyped-call]  # Autobahn is not annotated
        self._client = client

    def buildProtocol(self, addr: IAddress | None) -> ClientProtocol:
        protocol = _Protocol(self._client)
        protocol.factory = self
        return protocol


class _Protocol(ClientProtocol):
    """
    A L{ClientProtocol} that tells a failed TLS handshake apart from other
    ways the opening can fail.
    """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.opened.called:
            tls = tls_failure_reason(reason)
            if tls is not None:
                self.opened.errback(ClientTLSError(f"TLS handshake failed: {tls}"))
        super().connectionLost(reason)


@attrs.define(eq=False)
class _Subscription:
    """
    One event subscription: where its events go and who waits for its end.
    """

    name: str
    callback: EventCallback
    id: str | None = None
    waiters: list[Deferred[None]] = attrs.Factory(list)

    def matches(self, collection: object) -> bool:
        return self.name == "*" or self.name == collection

    def end(self, error: Exception | None) -> None:
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            if error is None:
                d.callback(None)
            else:
                d.errback(error)


@implementer(IMessageReceiver)
class Client:
    """
    A connection to a midjobs daemon, made by L{connect}.

    Every method that talks to the daemon returns a L{Deferred}.  Method
    failures arrive as L{ClientCallError} (L{ClientValidationErrors} for bad
    arguments), other JSON-RPC errors as L{JSONRPCError}, and a connection
    that ends first as L{ClientConnectionLost}.

    @ivar call_timeout: seconds to wait for each answer, or L{None} to wait
        forever; a call that runs out fails with C{defer.TimeoutError}.
    """

    def __init__(self, reactor: IReactorTime, *, call_timeout: float | None = None) -> None:
        self.call_timeout = call_timeout
        self._reactor = reactor
        self._ids = itertools.count(1)
        self._protocol: ClientProtocol | None = None
        self._pending: dict[int, Deferred[Any]] = {}
        self._subscriptions: list[_Subscription] = []
        self._closed_waiters: list[Deferred[None]] = []
        self._lost_reason: str | None = None

    # The connection.

    @property
    def connected(self) -> bool:
        """
        Whether the WebSocket is open.
        """
        return self._protocol is not None and self._lost_reason is None

    @property
    def closed(self) -> Deferred[None]:
        """
        A new Deferred that fires with L{None} once the connection has ended,
        for whatever reason (already fired if it has).
        """
        if self._lost_reason is not None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed_waiters.append(d)
        return d

    def close(self) -> Deferred[None]:
        """
        Start the WebSocket closing handshake; fires once the connection is gone.
        Calls still waiting fail with L{ClientConnectionLost}.
        """
        done = self.closed
        if self.connected:
            assert self._protocol is not None
            self._protocol.sendClose(code=1000)
        return done

    # IMessageReceiver: what the protocol tells.

    def protocol_opened(self, protocol: ClientProtocol) -> None:
        self._protocol = protocol

    def connection_lost(self, reason: str) -> None:
        if self._lost_reason is not None:
            return
        self._lost_reason = reason
        self._protocol = None
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(ClientConnectionLost(reason))
        subscriptions, self._subscriptions = self._subscriptions, []
        for sub in subscriptions:
            sub.end(ClientConnectionLost(reason))
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            d.callback(None)

    def _send(self, message: dict[str, Any]) -> None:
        if not self.connected:
            raise ClientConnectionLost(self._lost_reason or "not connected")
        assert self._protocol is not None
        payload = wire_json.dumps(message).encode("utf-8")
        self._protocol.sendMessage(payload, isBinary=False)  # type: ignore[no-untyped-call]  # Autobahn is not annotated

    def message_received(self, payload: bytes) -> None:
        try:
            message = wire_json.loads(payload)
        except ValueError:
            _log.warn("ignoring a message that is not JSON: {payload!r}", payload=payload[:200])
            return
        if not isinstance(message, dict):
            return
        method = message.get("method")
        if isinstance(method, str) and "id" not in message:
            self._notified(method, message.get("params"))
            return
        request_id = message.get("id")
        d = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if d is None:
            if "error" in message:
                _log.warn("error for no pending call: {error!r}", error=message["error"])
            return
        if "error" in message:
            d.errback(error_from_response(message["error"]))
        else:
            d.callback(message.get("result"))

    def _notified(self, method: str, params: object) -> None:
        if not isinstance(params, dict):
            return
        collection = params.get("collection", "")
        if method == "collection_update":
            msg, id_, fields = params.get("msg", ""), params.get("id"), params.get("fields") or {}
            for sub in list(self._subscriptions):
                if sub.matches(collection):
                    try:
                        sub.callback(msg, collection, id_, fields)
                    except Exception:
                        _log.failure("event callback for {name} failed", name=sub.name)
        elif method == "notify_unsubscribed":
            error = params.get("error")
            for sub in [s for s in self._subscriptions if s.name == collection]:
                self._subscriptions.remove(sub)
                sub.end(error_from_data(error) if error else None)

    # JSON-RPC.

    def call(self, method: str, *params: Any) -> Deferred[Any]:
        """
        Call C{method} with C{params}; fires with its decoded result.
        """
        request_id = next(self._ids)
        try:
            self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)})
        except Exception:
            return fail()
        d: Deferred[Any] = Deferred(lambda _: self._forget(request_id))
        self._pending[request_id] = d
        if self.call_timeout is not None:
            d.addTimeout(self.call_timeout, self._reactor)
        return d

    def _forget(self, request_id: int) -> None:
        self._pending.pop(request_id, None)

    def notify(self, method: str, *params: Any) -> None:
        """
        Call C{method} as a JSON-RPC notification: no answer, no error.

        @raise ClientConnectionLost: the connection is gone.
        """
        self._send({"jsonrpc": "2.0", "method": method, "params": list(params)})

    # Authentication.

    def login_ex(self, request: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """
        Call C{auth.login_ex}; fires with its whole response
        (C{response_type} is C{SUCCESS} when logged in).
        """
        return self.call("auth.login_ex", request)

    def login(self, username: str, password: str) -> Deferred[bool]:
        """
        Log in with a password; fires with whether it succeeded.
        """
        d = self.login_ex({"mechanism": "PASSWORD_PLAIN", "username": username, "password": password})
        return d.addCallback(lambda r: isinstance(r, dict) and r.get("response_type") == "SUCCESS")

    def login_with_api_key(self, key: str) -> Deferred[bool]:
        """
        Log in with an API key; fires with whether it succeeded.
        """
        return self.call("auth.login_with_api_key", key).addCallback(lambda r: r is True)

    # Events.

    def subscribe(self, event_name: str, callback: EventCallback) -> Deferred[str]:
        """
        Subscribe to C{event_name} (C{*} for all); fires with the subscription id.

        C{callback(msg, collection, id, fields)} is called for each
        C{collection_update} of that collection, from the moment of this call.
        """
        sub = _Subscription(event_name, callback)
        self._subscriptions.append(sub)

        def subscribed(sub_id: str) -> str:
            sub.id = sub_id
            return sub_id

        def failed(reason: Failure) -> Failure:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)
            return reason

        return self.call("core.subscribe", event_name).addCallbacks(subscribed, failed)

    def unsubscribe(self, sub_id: str) -> Deferred[Any]:
        """
        End a subscription: its callback is not called again.
        """
        for sub in [s for s in self._subscriptions if s.id == sub_id]:
            self._subscriptions.remove(sub)
            sub.end(None)
        return self.call("core.unsubscribe", sub_id)

    def subscription_ended(self, sub_id: str) -> Deferred[None]:
        """
        A new Deferred that fires with L{None} when the subscription ends by
        L{unsubscribe} or by the daemon, or fails with the daemon's error
        (L{ClientCallError}) or L{ClientConnectionLost}.
        """
        for sub in self._subscriptions:
            if sub.id == sub_id:
                d: Deferred[None] = Deferred()
                sub.waiters.append(d)
                return d
        if self._lost_reason is not None:
            return fail(ClientConnectionLost(self._lost_reason))
        return succeed(None)

    # Jobs.

    def call_job(self, method: str, *params: Any, callback: JobCallback | None = None) -> Deferred[Any]:
        """
        Start the job method C{method} and wait for the job to end.

        Needs C{legacy_jobs} (the default), where the call answers with the
        job id.  C{callback(job)} is called with the job record on each change
        of its state or progress.

        @return: fires with the job's result; fails with L{ClientCallError}
            if the job FAILED, L{JobAborted} if it was ABORTED.
        """
        return Deferred.fromCoroutine(self._call_job(method, params, callback))

    async def _call_job(self, method: str, params: tuple[Any, ...], callback: JobCallback | None) -> Any:
        watcher = JobWatcher(callback)
        sub_id = await self.subscribe("core.get_jobs", watcher.event)
        self.subscription_ended(sub_id).addCallbacks(
            lambda _: watcher.fail(ClientError("the core.get_jobs subscription ended")), watcher.fail
        )
        try:
            job_id = await self.call(method, *params)
            if not isinstance(job_id, int) or isinstance(job_id, bool):
                raise ClientError(f"{method} did not return a job id: {job_id!r}")
            watcher.started(job_id)
            if not watcher.done.called:
                # The job may have ended before its id came back.
                try:
                    job = await self.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
                except (ClientCallError, JSONRPCError):
                    pass
                else:
                    watcher.update(job)
            result = await watcher.done
            if _shows_redactions(result):
                # Records hide the secrets of a result (secret_result); its
                # caller may have it as it is.
                job = await self.call("core.get_jobs", [["id", "=", job_id]], {"get": True, "extra": {"raw_result": True}})
                result = job["result"]
            return result
        finally:
            watcher.done.addErrback(lambda _: None)  # nobody waits for it any more
            if self.connected and any(s.id == sub_id for s in self._subscriptions):
                self.unsubscribe(sub_id).addErrback(lambda _: None)


def _shows_redactions(value: object) -> bool:
    """
    Whether a job's result, as records show it, has secrets hidden in it.
    """
    if isinstance(value, dict):
        return any(_shows_redactions(v) for v in value.values())
    if isinstance(value, list):
        return any(_shows_redactions(v) for v in value)
    return value == REDACTED
