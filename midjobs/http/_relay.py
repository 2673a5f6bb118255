"""
A download fetched through another node of a cluster: C{/_download/<id>} on
a node that does not run job C{<id>} streams it from the node that does.

The node that got the request has used the token already; it asks the owner
for C{GET <owner>/_internal/download/<id>} with its relay credential
(L{midjobs.transfers.DownloadRelay}) in place of the token, and copies the
answer to its client as it comes.  The owner's connection is the client
request's push producer (L{twisted.web._newclient.TransportProxyProducer}):
a slow client pauses the reading from the owner, whose socket then fills and
whose pipe pauses the job.  Nothing is buffered beyond the socket buffers.

A break on the owner's side (its job fails, it goes away) aborts the client's
connection: never a short body that looks complete.  A client that goes away
closes the connection to the owner, whose job's next write fails.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ..logs import logger
from ..transfers import RELAY_HEADER, DownloadRelay
from ._answers import abort_connection, plain

__all__ = ["COPIED_HEADERS", "RelayedDownload", "fetch_relayed"]

log = logger(__name__)

#: The headers of the owner's answer that the client gets too.
COPIED_HEADERS = (b"Content-Type", b"Content-Disposition", b"Content-Length")


async def fetch_relayed(relay: DownloadRelay, reactor: Any, request: Any, job_id: int, owner: str) -> Any:
    """
    Ask the node at C{owner} (a base URL) for the download of job C{job_id},
    whose token the caller has used.

    @return: a L{RelayedDownload} that streams the owner's answer, or an
        answer of its own (502) if the owner cannot be reached or refuses
        this node.
    """
    # A stream of its own, closed at its end: never a connection kept for another request.
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))  # type: ignore[no-untyped-call]  # not annotated in Twisted
    url = f"{owner.rstrip('/')}/_internal/download/{job_id}".encode("utf-8")
    headers = Headers({RELAY_HEADER: [relay.credential(job_id).encode("utf-8")]})
    asked: Deferred[IResponse] = agent.request(b"GET", url, headers)
    # The client going away before the owner answers stops the asking.
    request.notifyFinish().addErrback(lambda _: asked.cancel())
    try:
        response = await asked
    except CancelledError:
        raise
    except Exception as e:
        log.warn("Job {job_id}: the node at {owner} cannot be reached: {reason}", job_id=job_id, owner=owner, reason=e)
        return plain(request, 502, f"The node that runs job {job_id} cannot be reached")
    if response.code == 403:
        response.deliverBody(_Discard())  # type: ignore[no-untyped-call]  # IResponse is not annotated in Twisted
        log.warn("Job {job_id}: the node at {owner} refused this node's relay credential", job_id=job_id, owner=owner)
        return plain(request, 502, f"The node that runs job {job_id} refused to relay it")
    return RelayedDownload(job_id, response)


class RelayedDownload(Resource):
    """
    The owner's answer to a relayed download, streamed to the client: its
    status, the L{COPIED_HEADERS}, and its body as it comes.
    """

    isLeaf = True

    def __init__(self, job_id: int, response: IResponse) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # not annotated in Twisted
        self._job_id = job_id
        self._response = response

    def render_GET(self, request: Any) -> Any:
        response = self._response
        request.setResponseCode(response.code, response.phrase)
        for name in COPIED_HEADERS:
            values = response.headers.getRawHeaders(name)
            if values is not None:
                request.responseHeaders.setRawHeaders(name, values)
        request.setHeader(b"Cache-Control", b"no-store")
        response.deliverBody(_RelayBody(request, self._job_id))  # type: ignore[no-untyped-call]  # IResponse is not annotated in Twisted
        return NOT_DONE_YET


class _Relay(Enum):
    """
    Where a relayed body is.
    """

    #: The owner's bytes go to the client as they come.
    STREAMING = "streaming"
    #: The client went away: the owner's connection is being closed.
    CLIENT_GONE = "client gone"
    #: The owner's answer ended, complete or cut off: the client's request is done.
    ENDED = "ended"


class _RelayBody(Protocol):
    """
    The body of the owner's answer, written to the client's request.  Its
    transport (the owner's connection, through a
    L{twisted.web._newclient.TransportProxyProducer}) is the request's push
    producer.
    """

    def __init__(self, request: Any, job_id: int) -> None:
        self._request = request
        self._job_id = job_id
        self._state = _Relay.STREAMING

    def connectionMade(self) -> None:
        self._owner = IPushProducer(self.transport)
        self._request.registerProducer(self._owner, True)
        self._request.notifyFinish().addErrback(self._client_gone)

    def dataReceived(self, data: bytes) -> None:
        if self._state is _Relay.STREAMING:
            self._request.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._state is not _Relay.STREAMING:
            return
        self._state = _Relay.ENDED
        self._request.unregisterProducer()
        if isinstance(reason.value, ResponseDone):
            log.info("Job {job_id}: relayed download complete", job_id=self._job_id)
            self._request.finish()
        else:
            log.info("Job {job_id}: relayed download cut off: {reason}", job_id=self._job_id, reason=reason.value)
            abort_connection(self._request)

    def _client_gone(self, reason: Failure) -> None:
        if self._state is not _Relay.STREAMING:
            return
        self._state = _Relay.CLIENT_GONE
        log.info("Job {job_id}: the client went away mid-download", job_id=self._job_id)
        self._owner.stopProducing()


class _Discard(Protocol):
    """
    A body nobody reads: its connection is closed at once.
    """

    def connectionMade(self) -> None:
        IPushProducer(self.transport).stopProducing()
