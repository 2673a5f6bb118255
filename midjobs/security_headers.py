"""
The security headers every HTTP response of the daemon carries.

They are chosen here, for both the HTTP side (L{midjobs.http}, which sets
them on every response of the site) and the WebSocket protocol
(L{midjobs.rpc}, for the HTTP errors of a refused handshake:
L{security_header_lines}).

The Content Security Policy fits a web page served by the daemon itself
from its own static HTML, JavaScript and CSS files (no inline scripts or
styles): scripts, styles, images and WebSocket connections come from the
same origin only, and no other site may frame the page.
"""

from __future__ import annotations

__all__ = [
    "API_PATHS",
    "CONTENT_SECURITY_POLICY",
    "STRICT_TRANSPORT_SECURITY",
    "is_api_path",
    "security_header_lines",
    "security_headers",
]

#: The policy for every response.  C{default-src 'self'} covers scripts,
#: styles and fonts; C{connect-src 'self'} allows the page's own WebSocket
#: (browsers match C{ws:}/C{wss:} of the same host and port to C{'self'}).
CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

#: Sent over TLS connections only: browsers then use HTTPS for a year.
STRICT_TRANSPORT_SECURITY = b"max-age=31536000"

#: The headers of every response, over TLS or not.
_ALWAYS = (
    (b"X-Content-Type-Options", b"nosniff"),
    (b"X-Frame-Options", b"DENY"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Content-Security-Policy", CONTENT_SECURITY_POLICY),
)

#: Paths (or path prefixes, those ending in C{/}) of the API: their answers
#: are never to be cached.
API_PATHS = (b"/_upload", b"/_download/", b"/api/")


def is_api_path(path: bytes) -> bool:
    """
    Whether C{path} (without its query) is one of the API's, whose answers
    get C{Cache-Control: no-store}.
    """
    return any(path.startswith(p) if p.endswith(b"/") else path == p for p in API_PATHS)


def security_headers(secure: bool, api: bool = False) -> list[tuple[bytes, bytes]]:
    """
    The security headers of one response.

    @param secure: the connection is TLS: add C{Strict-Transport-Security}.
    @param api: the response is an API answer: add C{Cache-Control: no-store}.
    """
    headers = list(_ALWAYS)
    if api:
        headers.append((b"Cache-Control", b"no-store"))
    if secure:
        headers.append((b"Strict-Transport-Security", STRICT_TRANSPORT_SECURITY))
    return headers


def security_header_lines(secure: bool) -> list[tuple[str, str]]:
    """
    The security headers as C{(name, value)} text pairs, for a response
    written by hand (a refused WebSocket handshake, which is an API answer).
    """
    return [(name.decode("ascii"), value.decode("ascii")) for name, value in security_headers(secure, api=True)]
