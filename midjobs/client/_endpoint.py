"""
From a daemon URI to a Twisted client endpoint and the WebSocket URL to ask for.

Three schemes: C{ws://host[:port][/path]}, C{wss://host[:port][/path]} and
C{ws+unix:///path/to/midjobs.sock}.  The path defaults to C{/api/current};
over a UNIX socket it is always C{/api/current}.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet import ssl
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint

__all__ = ["API_PATH", "client_endpoint"]

API_PATH = "/api/current"


def client_endpoint(
    uri: str, reactor: Any, *, timeout: float = 30, insecure: bool = False
) -> tuple[IStreamClientEndpoint, str]:
    """
    The endpoint that reaches C{uri}, and the C{ws://} or C{wss://} URL of the
    WebSocket resource (for the handshake's request line and C{Host}).

    @param insecure: for C{wss://}, skip the server certificate verification.
    @raise ValueError: C{uri} is not one of the three forms.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "ws+unix":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ValueError(f"No socket path in {uri!r}")
        return UNIXClientEndpoint(reactor, path, timeout=timeout), f"ws://localhost{API_PATH}"
    if scheme not in ("ws", "wss"):
        raise ValueError(f"Unsupported URI scheme in {uri!r} (use ws://, wss:// or ws+unix://)")
    host = parts.hostname
    if not host:
        raise ValueError(f"No host in {uri!r}")
    try:
        port = parts.port or (443 if scheme == "wss" else 80)
    except ValueError:
        raise ValueError(f"Bad port in {uri!r}") from None
    path = parts.path if parts.path not in ("", "/") else API_PATH
    if parts.query:
        path = f"{path}?{parts.query}"
    netloc = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{netloc}:{port}{path}"
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if scheme == "wss":
        creator: Any
        if insecure:
            creator = ssl.CertificateOptions(verify=False)
        else:
            creator = ssl.optionsForClientTLS(host)
        endpoint = wrapClientTLS(creator, endpoint)
    return endpoint, url
