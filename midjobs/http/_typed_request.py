"""
The typed face of a twisted.web request: what our resources and routes use
of one, for the type checker (Twisted's C{IRequest} leaves its methods
unannotated).  A C{twisted.web.server.Request} and any L{IRequest} provider
fit it.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

from twisted.internet.interfaces import IAddress
from twisted.web.http_headers import Headers

__all__ = ["TypedRequest"]


class TypedRequest(Protocol):
    """
    An HTTP request being answered (see C{twisted.web.iweb.IRequest}).
    """

    @property
    def method(self) -> bytes:
        """
        The request's method: C{b"GET"}, C{b"HEAD"}, C{b"POST"}...
        """

    @property
    def uri(self) -> bytes:
        """
        The request's target, its query included.
        """

    @property
    def postpath(self) -> Sequence[bytes] | None:
        """
        The path segments after the resource that answers.
        """

    @property
    def args(self) -> Mapping[bytes, Sequence[bytes]] | None:
        """
        The query's arguments (and a form body's, once read).
        """

    @property
    def requestHeaders(self) -> Headers:
        """
        The headers the client sent.
        """

    @property
    def responseHeaders(self) -> Headers:
        """
        The headers of the answer.
        """

    def getClientAddress(self) -> IAddress:
        """
        The address of the client.
        """

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        """
        Set the answer's status.
        """

    def setHeader(self, name: bytes, value: bytes) -> None:
        """
        Set one header of the answer.
        """

    def setETag(self, etag: bytes) -> object:
        """
        Set the answer's entity tag; true if the client's copy is current
        (the answer is then C{304 Not Modified}).
        """

    def write(self, data: bytes) -> None:
        """
        Write part of the answer's body.
        """

    def finish(self) -> None:
        """
        End the answer.
        """
