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

Every response, the upload's or another's, gets the security headers of
L{midjobs.http._headers} just before its headers go out (L{UploadRequest.write}).
"""

from __future__ import annotations

from io import BytesIO
from typing import Any
from urllib.parse import parse_qs

from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import datetimeToString
from twisted.web.iweb import INonQueuedRequestFactory
from zope.interface import implementer

from ..middleware import Middleware
from ._headers import add_security_headers
from ._upload import Upload

__all__ = ["UPLOAD_PATH", "UploadRequest", "upload_request_factory"]

#: The path the upload is served at.
UPLOAD_PATH = b"/_upload"


def _request_target(request: server.Request, command: bytes, uri: bytes, version: bytes) -> None:
    """
    Set what twisted.web sets in C{requestReceived}, from the request line.
    """
    request.method, request.uri, request.clientproto = command, uri, version
    path, question, query = uri.partition(b"?")
    request.path = path
    request.args = parse_qs(query, 1) if question else {}


class UploadRequest(server.Request):
    """
    A twisted.web request that streams C{POST /_upload} (see the module
    docstring) and is an ordinary L{server.Request} for everything else.
    Every response it sends carries the security headers.

    @ivar upload: the upload this request is, or L{None}.
    """

    def __init__(self, channel: Any, *args: Any, middleware: Middleware, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        self._middleware = middleware
        self.upload: Upload | None = None

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        command = getattr(channel, "_command", None)
        uri = getattr(channel, "_path", None)
        if command != b"POST" or uri is None or uri.partition(b"?")[0] != UPLOAD_PATH:
            super().gotLength(length)
            return
        _request_target(self, command, uri, getattr(channel, "_version", b"HTTP/1.0"))
        self.site = channel.site
        self.setHeader(b"Server", server.version)
        self.setHeader(b"Date", datetimeToString())
        # Nothing of the body goes here: it streams to the job.
        self.content = BytesIO()
        self.upload = Upload(self, self._middleware)
        self.upload.headers_received()

    def handleContentChunk(self, data: bytes) -> None:
        if self.upload is None:
            super().handleContentChunk(data)
        else:
            self.upload.data_received(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
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


@implementer(INonQueuedRequestFactory)
class UploadRequestFactory:
    def __init__(self, middleware: Middleware) -> None:
        self._middleware = middleware

    def __call__(self, channel: Any) -> UploadRequest:
        return UploadRequest(channel, middleware=self._middleware)


def upload_request_factory(middleware: Middleware) -> Any:
    """
    The C{requestFactory} for a L{server.Site}: L{UploadRequest}s that call
    C{middleware}.
    """
    return UploadRequestFactory(middleware)
