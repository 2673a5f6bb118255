"""
What the treq helpers share: a client for one transfer, base URLs, and reading a short answer.
"""

from __future__ import annotations

from typing import Callable, Coroutine, TypeVar
from urllib.parse import urlsplit, urlunsplit

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IResponse

from ._endpoint import TLSPolicy, tls_failure_reason

__all__ = ["http_url", "no_answer_reason", "read_prefix", "with_client"]

#: The most of an answer's body kept as the reason of an error.
MAX_REASON = 4096

#: The HTTP scheme of each WebSocket one.
_HTTP_SCHEMES = {"ws": "http", "wss": "https"}

_T = TypeVar("_T")


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
    reactor: IReactorTime | None,
    transfer: Callable[[HTTPClient], Coroutine[Deferred[object], object, _T]],
    *,
    insecure: bool = False,
    ca_file: str | None = None,
) -> Deferred[_T]:
    """
    Run C{transfer} with C{client}, or with a client of its own whose
    connections are closed once C{transfer} is done.

    @param reactor: the reactor for a client made here (Twisted's global
        one by default).
    @param insecure: for a client made here, do not verify C{https://}
        certificates.
    @param ca_file: for a client made here, trust the certificate
        authorities of this PEM file instead of the system's.
    @return: fails with C{ValueError} if C{ca_file} cannot be used.
    """
    if client is not None:
        return Deferred.fromCoroutine(transfer(client))
    if reactor is None:
        from twisted.internet import reactor
    try:
        policy = TLSPolicy(insecure=insecure, ca_file=ca_file)
    except ValueError:
        return fail()
    pool = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]  # not annotated in Twisted
    agent = Agent(reactor, contextFactory=policy, pool=pool)  # type: ignore[no-untyped-call]  # not annotated in Twisted

    async def transfer_and_close() -> _T:
        try:
            return await transfer(HTTPClient(agent))
        finally:
            closed: Deferred[None] = pool.closeCachedConnections()  # type: ignore[no-untyped-call]  # not annotated in Twisted
            # However closing goes, the answer is the transfer's.
            await closed.addErrback(lambda _: None)

    return Deferred.fromCoroutine(transfer_and_close())


async def read_prefix(response: IResponse) -> bytes:
    """
    The first L{MAX_REASON} bytes of C{response}'s body (all of it is read).
    """
    body = bytearray()

    def keep(data: bytes) -> None:
        if len(body) < MAX_REASON:
            body.extend(data[: MAX_REASON - len(body)])

    await treq.collect(response, keep)
    return bytes(body)
