"""
What the treq helpers share: a client for one transfer, base URLs, and reading a short answer.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, fail
from twisted.web.client import Agent, HTTPConnectionPool

from ._endpoint import TLSPolicy, tls_failure_reason

__all__ = ["http_url", "no_answer_reason", "read_prefix", "with_client"]

#: The most of an answer's body kept as the reason of an error.
MAX_REASON = 4096

#: The HTTP scheme of each WebSocket one.
_HTTP_SCHEMES = {"ws": "http", "wss": "https"}


def http_url(url: str) -> str:
    """
    C{url} as an HTTP URL: a C{ws://} or C{wss://} URL (the daemon's
    WebSocket) becomes C{http://} or C{https://} on the same host and port;
    any other URL is returned as it is.
    """
    parts = urlsplit(url)
    scheme = _HTTP_SCHEMES.get(parts.scheme.lower())
    return urlunsplit(parts._replace(scheme=scheme)) if scheme else url


def no_answer_reason(error: Exception) -> str:
    """
    Why a request got no answer, from the C{error} treq raised: a failed TLS
    handshake said plainly, anything else as it is.
    """
    for failure in getattr(error, "reasons", None) or ():
        tls = tls_failure_reason(failure)
        if tls is not None:
            return f"TLS handshake failed: {tls}"
    return str(error)


def with_client(
    client: HTTPClient | None,
    reactor: Any,
    transfer: Callable[[HTTPClient], Awaitable[Any]],
    *,
    insecure: bool = False,
    ca_file: str | None = None,
) -> Deferred[Any]:
    """
    Run C{transfer} with C{client}, or with a client of its own whose
    connections are closed once C{transfer} is done.

    @param insecure: for a client made here, do not verify C{https://}
        certificates.
    @param ca_file: for a client made here, trust the certificate
        authorities of this PEM file instead of the system's.
    @return: fails with C{ValueError} if C{ca_file} cannot be used.
    """
    if client is not None:
        return Deferred.fromCoroutine(transfer(client))  # type: ignore[arg-type]
    if reactor is None:
        from twisted.internet import reactor
    try:
        policy = TLSPolicy(insecure=insecure, ca_file=ca_file)
    except ValueError:
        return fail()
    pool = HTTPConnectionPool(reactor, persistent=False)
    agent = Agent(reactor, contextFactory=policy, pool=pool)
    d = Deferred.fromCoroutine(transfer(HTTPClient(agent)))  # type: ignore[arg-type]
    return d.addBoth(lambda result: pool.closeCachedConnections().addBoth(lambda _: result))


async def read_prefix(response: Any) -> bytes:
    """
    The first L{MAX_REASON} bytes of C{response}'s body (all of it is read).
    """
    body = bytearray()

    def keep(data: bytes) -> None:
        if len(body) < MAX_REASON:
            body.extend(data[: MAX_REASON - len(body)])

    await treq.collect(response, keep)
    return bytes(body)
