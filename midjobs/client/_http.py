"""
What the treq helpers share: a client for one transfer, and reading a short answer.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, HTTPConnectionPool

__all__ = ["read_prefix", "with_client"]

#: The most of an answer's body kept as the reason of an error.
MAX_REASON = 4096


def with_client(
    client: HTTPClient | None, reactor: Any, transfer: Callable[[HTTPClient], Awaitable[Any]]
) -> Deferred[Any]:
    """
    Run C{transfer} with C{client}, or with a client of its own whose
    connections are closed once C{transfer} is done.
    """
    if client is not None:
        return Deferred.fromCoroutine(transfer(client))  # type: ignore[arg-type]
    if reactor is None:
        from twisted.internet import reactor
    pool = HTTPConnectionPool(reactor, persistent=False)
    d = Deferred.fromCoroutine(transfer(HTTPClient(Agent(reactor, pool=pool))))  # type: ignore[arg-type]
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
