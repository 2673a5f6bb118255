# twisted.web (Request, HTTPChannel) and twisted.python.failure are unannotated.
# mypy: allow-untyped-calls
"""
The request class of the site: C{POST /_upload} streams, everything else is twisted.web as usual.

A L{SiteRequest} takes the body of C{POST /_upload} over as a
L{RequestBody<midjobs.http._body.RequestBody>} and hands it to
L{serve_upload<midjobs.http._upload.serve_upload>} once the headers are in.

No other route takes a body: a request that brings one to another route,
with a C{Content-Length} above zero or chunked, is answered 413 at once,
before any of its body is read, and nothing of it is kept (L{refuse_body}).
Over HTTP/2 a request need not tell its length (a browser's C{DELETE}, curl's
C{POST} without data): its length is unknown until its stream ends, and such
a request is no refused body.  Its stream is watched instead
(L{SiteRequest.expect_no_body}): if it ends with nothing, twisted.web serves
the request as usual; if a byte of body comes, or the request asks for
C{100 Continue}, it is answered 413 and its stream reset after a while,
while the connection's other streams go on.

C{getClientAddress} is the client's address behind the trusted proxies
(L{midjobs.addresses.client_address}): the access log, the login throttle
and token origins all see it.

Every response, the upload's or another's, gets the security headers of
L{midjobs.http._headers} just before its headers go out (L{SiteRequest.write}).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence, cast

from twisted.internet.interfaces import IAddress
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import HTTPChannel
from twisted.web.iweb import INonQueuedRequestFactory
from zope.interface import implementer

from ..addresses import Network, client_address, proxy_networks
from ..logs import logger
from ..middleware import Middleware
from ._body import BodyInterrupted, RequestBody, StreamingRequest
from ._headers import add_security_headers
from ._upload import UPLOAD_PATH, origin, serve_upload

__all__ = ["SiteRequest", "SiteRequestFactory", "refuse_body", "takes_body"]

log = logger(__name__)


def takes_body(command: bytes, path: bytes) -> bool:
    """
    Whether the route of C{command} C{path} (without the query) takes a
    request body: C{POST /_upload} only.  The WebSocket handshake is a C{GET}.
    """
    return command == b"POST" and path == UPLOAD_PATH


def refuse_body(request: StreamingRequest, length: int | None, body: RequestBody) -> None:
    """
    Answer a request that brings a body to a route that takes none: 413 at
    once, and the rest of the body is dropped (L{RequestBody.drop_rest}).
    """
    if length is not None:
        size = f"a body of {length} bytes"
    else:
        size = "a chunked body" if body.http11 else "a body of unknown length (HTTP/2)"
    log.info(
        "Refused {size} to {method} {path} from {address}: the route takes no body",
        size=size,
        method=request.method.decode("latin-1"),
        path=request.path.decode("latin-1"),
        address=origin(request),
    )
    payload = b'{"error": "This route takes no request body"}'
    request.setResponseCode(413)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % len(payload))
    body.close_after_response()
    request.write(payload)
    body.drop_rest()


class SiteRequest(StreamingRequest):
    """
    A twisted.web request that streams C{POST /_upload} (see the module
    docstring) and is an ordinary L{server.Request<twisted.web.server.Request>}
    for everything else.  Every response it sends carries the security
    headers.
    """

    def __init__(
        self,
        channel: HTTPChannel,
        queued: object = None,
        *,
        middleware: Middleware,
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        super().__init__(channel, middleware.reactor)
        self._middleware = middleware
        self._trusted_proxies = trusted_proxies

    def getClientAddress(self) -> IAddress:
        """
        The client's address: the peer's, or the one a trusted proxy forwarded.
        """
        return cast(IAddress, client_address(super().getClientAddress(), self._header, self._trusted_proxies))

    def _header(self, name: str) -> bytes | None:
        values = self.requestHeaders.getRawHeaders(name.encode("latin-1"))
        return b", ".join(values) if values else None

    def body_handler(self, method: bytes, path: bytes, length: int | None) -> Callable[[RequestBody], object] | None:
        if takes_body(method, path):
            return partial(serve_upload, self._middleware, self)
        if length == 0:
            return None
        if length is None and not isinstance(self.channel, HTTPChannel):
            # HTTP/2 without a Content-Length: a body only if one comes.
            return self.expect_no_body
        self._middleware.metrics.limit_hit("body")
        return partial(refuse_body, self, length)

    def expect_no_body(self, body: RequestBody) -> None:
        """
        Serve a request of unknown length (HTTP/2) to a route that takes no
        body once its stream ends with nothing; refuse it (L{refuse_body})
        if a body comes, or if it waits for C{100 Continue} (it says it
        has a body to send).
        """

        def came(data: bytes) -> None:
            if data:
                self._refuse_unknown(body)
            else:
                self._serve_as_usual()

        def lost(failure: Failure) -> None:
            # The stream was reset: nobody to answer.
            failure.trap(BodyInterrupted)

        if body.expects_continue:
            self._refuse_unknown(body)
        else:
            body.read().addCallbacks(came, lost)

    def _refuse_unknown(self, body: RequestBody) -> None:
        self._middleware.metrics.limit_hit("body")
        refuse_body(self, None, body)

    def _serve_as_usual(self) -> None:
        """
        The stream ended with no body: hand the request to twisted.web as if
        its body had never been taken over, with an empty body.
        """
        self.body = None
        server.Request.gotLength(self, 0)
        self.requestReceived(self.method, self.uri, self.clientproto)

    def write(self, data: bytes) -> None:
        """
        Write C{data}; the first write (C{finish} makes one too) adds the
        security headers to those of the response, which it sends.
        """
        if not self.startedWriting:
            add_security_headers(self)
        super().write(data)


@implementer(INonQueuedRequestFactory)
class SiteRequestFactory:
    """
    The C{requestFactory} of a L{server.Site<twisted.web.server.Site>}:
    L{SiteRequest}s that call C{middleware}.
    """

    def __init__(self, middleware: Middleware) -> None:
        self._middleware = middleware
        settings = middleware.settings
        self._trusted_proxies = proxy_networks(tuple(settings.trusted_proxies)) if settings is not None else ()

    def __call__(self, channel: HTTPChannel, queued: object = None) -> SiteRequest:
        return SiteRequest(channel, middleware=self._middleware, trusted_proxies=self._trusted_proxies)
