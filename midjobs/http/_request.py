"""
The request factory of the site: C{POST /_upload} streams, everything else is twisted.web as usual.

twisted.web reads a whole request body (into memory or a temporary file)
before any resource sees the request, so the upload is no resource.  An
L{UploadRequest} takes C{POST /_upload} over through the hooks
L{twisted.web.http.HTTPChannel} calls on its request:

  - C{gotLength}, right after the headers (the channel's C{_command},
    C{_path} and C{_version} hold the request line then): start an
    L{Upload}, and create no C{content} file for the body;
  - C{handleContentChunk}, for each piece of the body, de-chunked;
  - C{requestReceived}, once the body ended (instead of C{process()});
  - C{connectionLost}.

No other route takes a body (L{takes_body}): a request that brings one to
another route, with a C{Content-Length} above zero or chunked, is answered
413 from C{gotLength}, before any of its body is read, and nothing of it is
kept (see L{RefusedBody}).

C{getClientAddress} is the client's address behind the trusted proxies
(L{midjobs.addresses.client_address}): the access log, the login throttle
and token origins all see it.

Every response, the upload's or another's, gets the security headers of
L{midjobs.http._headers} just before its headers go out (L{UploadRequest.write}).
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Sequence
from urllib.parse import parse_qs

from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import datetimeToString
from twisted.web.iweb import INonQueuedRequestFactory
from zope.interface import implementer

from ..addresses import Network, client_address, proxy_networks
from ..logs import logger
from ..middleware import Middleware
from ._headers import add_security_headers
from ._upload import LINGER_BYTES, LINGER_SECONDS, Upload

__all__ = ["UPLOAD_PATH", "RefusedBody", "UploadRequest", "takes_body", "upload_request_factory"]

log = logger(__name__)

#: The path the upload is served at.
UPLOAD_PATH = b"/_upload"


def takes_body(command: bytes, path: bytes) -> bool:
    """
    Whether the route of C{command} C{path} (without the query) takes a
    request body: C{POST /_upload} only.  The WebSocket handshake is a C{GET}.
    """
    return command == b"POST" and path == UPLOAD_PATH


def _request_target(request: server.Request, command: bytes, uri: bytes, version: bytes) -> None:
    """
    Set what twisted.web sets in C{requestReceived}, from the request line.
    """
    request.method, request.uri, request.clientproto = command, uri, version
    path, question, query = uri.partition(b"?")
    request.path = path
    request.args = parse_qs(query, 1) if question else {}


class RefusedBody:
    """
    The body of a request to a route that takes none, answered 413 at once.

    Nothing of the body is kept.  What the client still sends is read and
    dropped for a short while (L{LINGER_SECONDS}, L{LINGER_BYTES}), so that
    it can read the answer (closing a socket with unread data resets it);
    then, or when the body ends, the connection is closed.
    """

    def __init__(self, request: UploadRequest, length: int | None) -> None:
        self._request = request
        self._channel = request.channel
        self._dropped = 0
        self._connected = True
        self._linger: Any = None
        request.site = self._channel.site
        request.setHeader(b"Server", server.version)
        request.setHeader(b"Date", datetimeToString())
        request.content = BytesIO()
        headers = request.requestHeaders
        expects_continue = (headers.getRawHeaders(b"Expect") or [b""])[0].lower() == b"100-continue"
        # No 100 Continue: the client that waits for it sends nothing.
        headers.removeHeader(b"Expect")
        size = "a chunked body" if length is None else f"a body of {length} bytes"
        log.info(
            "Refused {size} to {method} {path} from {address}: the route takes no body",
            size=size,
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            address=origin(request),
        )
        body = b'{"error": "This route takes no request body"}'
        request.setResponseCode(413)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.setHeader(b"Connection", b"close")
        self._channel.persistent = False
        request.write(body)
        if expects_continue and request.clientproto == b"HTTP/1.1":
            self._close()
        else:
            self._linger = request.channel.callLater(LINGER_SECONDS, self._close)

    def content_chunk(self, data: bytes) -> None:
        self._dropped += len(data)
        if self._dropped > LINGER_BYTES:
            self._close()

    def body_ended(self) -> None:
        self._cancel_linger()
        if self._connected and not self._request.finished:
            self._request.finish()

    def connection_lost(self) -> None:
        self._connected = False
        self._cancel_linger()

    def _cancel_linger(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None

    def _close(self) -> None:
        self._cancel_linger()
        if self._connected:
            self._channel.loseConnection()


def origin(request: Any) -> str:
    """
    The client's host (behind the trusted proxies) for a log line.
    """
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else "unix" if type(address).__name__ == "UNIXAddress" else str(address)


class UploadRequest(server.Request):
    """
    A twisted.web request that streams C{POST /_upload} (see the module
    docstring) and is an ordinary L{server.Request} for everything else.
    Every response it sends carries the security headers.  A body sent to
    any other route is refused (L{RefusedBody}).

    @ivar upload: the upload this request is, or L{None}.
    @ivar refused_body: the refusal of this request's body, or L{None}.
    """

    def __init__(
        self, channel: Any, *args: Any, middleware: Middleware, trusted_proxies: Sequence[Network] = (), **kwargs: Any
    ) -> None:
        super().__init__(channel, *args, **kwargs)
        self._middleware = middleware
        self._trusted_proxies = trusted_proxies
        self.upload: Upload | None = None
        self.refused_body: RefusedBody | None = None

    def getClientAddress(self) -> Any:
        """
        The client's address: the peer's, or the one a trusted proxy forwarded.
        """
        return client_address(super().getClientAddress(), self._header, self._trusted_proxies)

    def _header(self, name: str) -> bytes | None:
        values = self.requestHeaders.getRawHeaders(name.encode("latin-1"))
        return b", ".join(values) if values else None

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        command = getattr(channel, "_command", None)
        uri = getattr(channel, "_path", None)
        if command is None or uri is None:
            super().gotLength(length)
            return
        version = getattr(channel, "_version", b"HTTP/1.0")
        if not takes_body(command, uri.partition(b"?")[0]):
            if length == 0:
                super().gotLength(length)
                return
            _request_target(self, command, uri, version)
            self._middleware.metrics.limit_hit("body")
            self.refused_body = RefusedBody(self, length)
            return
        _request_target(self, command, uri, version)
        self.site = channel.site
        self.setHeader(b"Server", server.version)
        self.setHeader(b"Date", datetimeToString())
        # Nothing of the body goes here: it streams to the job.
        self.content = BytesIO()
        self.upload = Upload(self, self._middleware)
        self.upload.headers_received()

    def handleContentChunk(self, data: bytes) -> None:
        if self.upload is not None:
            self.upload.data_received(data)
        elif self.refused_body is not None:
            self.refused_body.content_chunk(data)
        else:
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused_body is not None:
            self.refused_body.body_ended()
            return
        if self.upload is None:
            super().requestReceived(command, path, version)
            return
        _request_target(self, command, path, version)
        self.upload.body_received()

    def write(self, data: bytes) -> None:
        """
        Write C{data}; the first write (C{finish} makes one too) adds the
        security headers to those of the response, which it sends.
        """
        if not self.startedWriting:
            add_security_headers(self)
        super().write(data)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self.upload is not None:
            self.upload.connection_lost(reason)
        if self.refused_body is not None:
            self.refused_body.connection_lost()


@implementer(INonQueuedRequestFactory)
class UploadRequestFactory:
    def __init__(self, middleware: Middleware) -> None:
        self._middleware = middleware
        settings = middleware.settings
        self._trusted_proxies = proxy_networks(tuple(settings.trusted_proxies)) if settings is not None else ()

    def __call__(self, channel: Any) -> UploadRequest:
        return UploadRequest(channel, middleware=self._middleware, trusted_proxies=self._trusted_proxies)


def upload_request_factory(middleware: Middleware) -> Any:
    """
    The C{requestFactory} for a L{server.Site}: L{UploadRequest}s that call
    C{middleware}.
    """
    return UploadRequestFactory(middleware)
