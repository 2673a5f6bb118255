"""
Which web pages may open the WebSocket: the C{Origin} check of the handshake.

A browser sends the C{Origin} of the page that opens a WebSocket, and lets
any page open one to any host, with the user's network position (and, for
HTTP, cookies).  So a page from elsewhere is refused: the daemon accepts an
C{Origin} only when it is the daemon's own (the page was served by the
daemon, through the same scheme, host and port the WebSocket uses), or when
it is one of the configured C{[http] allowed_origins}.  Clients that are not
browsers (midclt, scripts) send no C{Origin} and are not concerned.
"""

from __future__ import annotations

from typing import Iterable
from urllib.parse import urlsplit

import attrs

__all__ = ["Origin", "OriginPolicy"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@attrs.frozen
class Origin:
    """
    A web origin: scheme, host and port, compared without regard to case or
    to the default port being written out.

    @ivar scheme: C{http} or C{https}.
    @ivar host: the host name or IP address, lower case (an IPv6 address
        without brackets).
    @ivar port: the port, the scheme's default when the text gives none.
    """

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Origin:
        """
        The origin an C{Origin} header or a configured origin names, such as
        C{https://example.com} or C{http://[::1]:6000}.

        @raise ValueError: C{text} is not an C{http} or C{https} origin
            (another scheme, C{null}, no host, a path, a query, credentials).
        """
        parts = urlsplit(text.strip())
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"{text!r} is not an http:// or https:// origin")
        if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError(f"{text!r} is not an origin: it has more than a scheme, host and port")
        return cls._of(scheme, parts.netloc, text)

    @classmethod
    def of_host(cls, host: str, secure: bool) -> Origin:
        """
        The origin of a request with the C{Host} header C{host}, made over TLS
        (C{secure}) or not.

        @raise ValueError: C{host} is no valid C{Host} header.
        """
        return cls._of("https" if secure else "http", host.strip(), host)

    @classmethod
    def _of(cls, scheme: str, netloc: str, text: str) -> Origin:
        try:
            parts = urlsplit(f"//{netloc}")
            host, port = parts.hostname, parts.port
        except ValueError:
            raise ValueError(f"{text!r} has a bad port") from None
        if not host or "@" in netloc:
            raise ValueError(f"{text!r} has no host")
        return cls(scheme, host.lower(), port if port is not None else _DEFAULT_PORTS[scheme])

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == _DEFAULT_PORTS[self.scheme] else f":{self.port}"
        return f"{self.scheme}://{host}{port}"


@attrs.frozen
class OriginPolicy:
    """
    Decides whether a WebSocket handshake's C{Origin} is allowed (see the
    module docstring).

    @ivar allowed: the origins allowed besides the daemon's own.
    """

    allowed: frozenset[Origin] = frozenset()

    @classmethod
    def from_strings(cls, origins: Iterable[str]) -> OriginPolicy:
        """
        A policy that allows the daemon's own origin and C{origins}.

        @raise ValueError: one of C{origins} is not an origin.
        """
        return cls(frozenset(Origin.parse(o) for o in origins))

    def allows(self, origin: str | None, host: str | None, secure: bool) -> bool:
        """
        Whether to accept a handshake.

        @param origin: its C{Origin} header, or L{None} when it has none
            (always allowed: no browser made the request).
        @param host: its C{Host} header, or L{None}.
        @param secure: whether the connection is TLS.
        @return: C{True} if there is no C{Origin}, or if it is the origin of
            the request itself (same scheme, host and port), or one of
            L{allowed}; C{False} for any other, and for an C{Origin} that is
            not an http or https origin (C{null}, a C{file:} page...).
        """
        if origin is None:
            return True
        try:
            claimed = Origin.parse(origin)
        except ValueError:
            return False
        if claimed in self.allowed:
            return True
        if host is None:
            return False
        try:
            return claimed == Origin.of_host(host, secure)
        except ValueError:
            return False
