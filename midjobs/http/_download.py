"""
C{GET /_download/<job_id>?auth_token=...}: a job's output pipe, streamed to the client.

C{core.download} starts a job with an output pipe, makes a single-use token
bound to that job and records a L{midjobs.transfers.PendingDownload}.  The
route below checks the token through the portal, claims the download and
hands the pipe to the response with L{Pipe.deliver_to}: the pipe
is the response's push producer, so a slow client pauses the job's writes.

A download that breaks (the job fails, the daemon stops) never ends like a
complete file: the connection is aborted without the last chunk.  A client
that goes away breaks the pipe, so the job's next write fails.

The bytes sent count in the job's transfer figures (C{progress.extra}'s
C{bytes}, C{rate}; L{midjobs.transfer_progress}), beside those the job
reports itself (C{filesystem.get} knows the file's size).
"""

from __future__ import annotations

import unicodedata
import urllib.parse
from typing import TYPE_CHECKING, Any

from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from ..auth import TokenCredentials, origin_of
from ..counts import NO_COUNTS, ICounts
from ..errors import CallError
from ..logs import logger
from ..store.errors import Unavailable
from ..transfer_progress import TransferProgress, transfer_progress
from ..transfers import RELAY_HEADER, DownloadGone, PendingDownload
from ._answers import abort_connection, plain
from ._relay import fetch_relayed

if TYPE_CHECKING:
    from ..middleware import Middleware

__all__ = [
    "DownloadResource",
    "content_disposition",
    "safe_filename",
    "serve_download",
    "serve_relayed_download",
]

log = logger(__name__)

#: The name a download gets when its own name leaves nothing usable.
DEFAULT_FILENAME = "download"


def _ascii_fallback(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(
        ch if ord(ch) < 128 else "_" for ch in decomposed if not unicodedata.combining(ch)
    )


def safe_filename(name: str) -> str:
    """
    C{name} made harmless as a file name: no quotes, backslashes, path
    separators, control or invisible formatting characters, at most 255
    UTF-8 bytes, never empty, C{.} or C{..}.
    """
    cleaned = []
    for ch in name:
        if ch in "/\\":
            cleaned.append("_")
        elif ch == '"' or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            continue
        else:
            cleaned.append(ch)
    result = "".join(cleaned).strip()
    while len(result.encode("utf-8")) > 255:
        result = result[:-1]
    if result in ("", ".", ".."):
        return DEFAULT_FILENAME
    return result


def content_disposition(filename: str) -> bytes:
    """
    The C{Content-Disposition} value for an attachment named C{filename}
    (RFC 6266): C{filename="..."} with an ASCII name, and for a non-ASCII name
    also C{filename*=UTF-8''...}, which clients that know it prefer.
    """
    name = safe_filename(filename)
    fallback = safe_filename(_ascii_fallback(name))
    value = f'attachment; filename="{fallback}"'
    if fallback != name:
        encoded = urllib.parse.quote(name, safe="!#$&+-.^_`|~", encoding="utf-8")
        value += f"; filename*=UTF-8''{encoded}"
    return value.encode("ascii")


async def serve_download(middleware: Middleware, request: Any, job_id: int) -> Any:
    """
    Answer C{GET /_download/<job_id>?auth_token=...}.

    401 without a live token; 404 if job C{job_id} has no download waiting
    (here, or on the node of the cluster that runs it); 503 if that node
    cannot be found now or the tokens cannot be read; 410 if it was not
    begun in time; 401 if the token is not for that job, was used already,
    or its user is gone.  Otherwise a L{DownloadResource} that streams the
    job's output, or for a job another node runs, a
    L{midjobs.http._relay.RelayedDownload} that streams it from that node.
    """
    try:
        return await _serve_download(middleware, request, job_id)
    except Unavailable as e:
        log.warn("Job {job_id}: no download, the token database is unavailable: {reason}", job_id=job_id, reason=e)
        return plain(request, 503, "The token database is unavailable; try again")


async def _serve_download(middleware: Middleware, request: Any, job_id: int) -> Any:
    if request.method != b"GET":
        request.setHeader(b"Allow", b"GET")
        return plain(request, 405, "Only GET is allowed")
    values = (request.args or {}).get(b"auth_token") or []
    if len(values) != 1 or not values[0]:
        return plain(request, 401, "Give one auth_token")
    try:
        token = values[0].decode("ascii")
    except UnicodeDecodeError:
        return plain(request, 401, "Invalid or expired token")
    if middleware.logins is None or await middleware.tokens.lookup(token) is None:
        return plain(request, 401, "Invalid or expired token")
    pending = middleware.downloads.get(job_id)
    relay = middleware.download_relay
    owner: str | None = None
    if pending is None and relay is not None:
        try:
            owner = await relay.locate(job_id)
        except Exception as e:
            log.warn("Job {job_id}: cannot tell which node runs it: {reason}", job_id=job_id, reason=e)
            return plain(request, 503, f"Cannot tell which node runs job {job_id}; try again")
    if pending is None and owner is None:
        return plain(request, 404, f"Job {job_id} has no download")
    if pending is not None and pending.expired:
        return plain(request, 410, f"The download of job {job_id} was not begun in time")
    origin = origin_of(request.getClientAddress())
    try:
        user = await middleware.logins.login(TokenCredentials(token, job_id=job_id, origin=origin), origin, "download token")
    except (UnauthorizedLogin, LoginFailed):
        return plain(request, 401, "Invalid or expired token")
    if relay is not None and owner is not None:
        log.info(
            "{username} began downloading job {job_id} through this node from {owner}",
            username=user.username,
            job_id=job_id,
            owner=owner,
        )
        return await fetch_relayed(relay, middleware.reactor, request, job_id, owner)
    return _claim(middleware, request, job_id, user.username)


async def serve_relayed_download(middleware: Middleware, request: Any, job_id: int) -> Any:
    """
    Answer C{GET /_internal/download/<job_id>} from another node of the
    cluster, which used the token already: with a genuine, current relay
    credential for job C{job_id} in L{RELAY_HEADER}, the job's output as
    C{/_download} streams it; 403 without one; 404 on a single daemon.
    """
    relay = middleware.download_relay
    if relay is None:
        return plain(request, 404, "No such resource")
    values = request.requestHeaders.getRawHeaders(RELAY_HEADER) or []
    node = relay.verify(values[0].decode("latin-1"), job_id) if len(values) == 1 else None
    if node is None:
        log.warn(
            "Refused a relay of job {job_id} from {peer}: no valid credential",
            job_id=job_id,
            peer=str(request.getClientAddress()),
        )
        return plain(request, 403, "A relay needs a valid credential")
    pending = middleware.downloads.get(job_id)
    if pending is None:
        return plain(request, 404, f"Job {job_id} has no download")
    return _claim(middleware, request, job_id, f"node {node}")


def _claim(middleware: Middleware, request: Any, job_id: int, who: str) -> Any:
    """
    Begin the download of job C{job_id} for C{who} (for the log): a
    L{DownloadResource}, or 404 or 410.
    """
    try:
        download = middleware.downloads.claim(job_id)
    except KeyError:
        return plain(request, 404, f"Job {job_id} has no download")
    except DownloadGone as e:
        return plain(request, 410, str(e))
    log.info(
        "{username} began downloading job {job_id} as {filename!r}",
        username=who,
        job_id=job_id,
        filename=download.filename,
    )
    try:
        transfer: TransferProgress | None = transfer_progress(middleware.jobs.get(job_id))
    except CallError:
        # The job is gone already (a buffered download of a job that ended).
        transfer = None
    return DownloadResource(download, getattr(middleware, "metrics", NO_COUNTS), transfer)


class DownloadResource(Resource):
    """
    Streams one claimed download: the pipe is the response's producer.
    """

    isLeaf = True

    def __init__(
        self, download: PendingDownload, counts: ICounts = NO_COUNTS, transfer: TransferProgress | None = None
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # not annotated in Twisted
        self._download = download
        self._counts = counts
        self._transfer = transfer

    def render_GET(self, request: Any) -> Any:
        download = self._download
        lost: list[Failure] = []
        request.notifyFinish().addErrback(lost.append)
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"Content-Disposition", content_disposition(download.filename))
        request.setHeader(b"Cache-Control", b"no-store")
        delivered = download.pipe.deliver_to(CountingConsumer(request, self._counts, self._transfer))
        delivered.addCallbacks(self._complete, self._broken, callbackArgs=(request, lost), errbackArgs=(request, lost))
        return NOT_DONE_YET

    def _complete(self, _: None, request: Any, lost: list[Failure]) -> None:
        log.info("Job {job_id}: download complete", job_id=self._download.job_id)
        if self._transfer is not None:
            self._transfer.finish()
        if not lost:
            request.finish()

    def _broken(self, failure: Failure, request: Any, lost: list[Failure]) -> None:
        job_id = self._download.job_id
        if lost:
            log.info("Job {job_id}: the client went away mid-download", job_id=job_id)
        elif not request.startedWriting:
            # Nothing sent yet: there is still time for an honest status.
            log.info(
                "Job {job_id}: no download, the job failed: {reason}", job_id=job_id, reason=failure.value
            )
            request.responseHeaders.removeHeader(b"Content-Disposition")
            request.write(plain(request, 500, f"The job failed: {failure.value}"))
            request.finish()
        else:
            log.info("Job {job_id}: download cut off: {reason}", job_id=job_id, reason=failure.value)
            abort_connection(request)


@implementer(IConsumer)
class CountingConsumer:
    """
    A download's response as the pipe's consumer: every byte written to it
    counts in C{counts} (C{midjobs_download_bytes_total}) as it goes, and in
    the job's C{transfer} figures.
    """

    def __init__(self, request: Any, counts: ICounts, transfer: TransferProgress | None = None) -> None:
        self._request = request
        self._counts = counts
        self._transfer = transfer
        self._sent = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._request.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._request.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._request.write(data)
        self._counts.downloaded(len(data))
        if self._transfer is not None:
            self._sent += len(data)
            self._transfer.moved(self._sent)
