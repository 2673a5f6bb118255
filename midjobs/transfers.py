"""
Transfers the daemon prepares for a client: downloads waiting to begin, and
how a download crosses from the node that runs its job to another.

C{core.download} starts a job with an output pipe, makes a single-use token
bound to that job and records a L{PendingDownload} here; C{GET /_download}
(L{midjobs.http}) claims it and streams the pipe.  A download not begun by
its deadline aborts the job's output pipe, so a job blocked writing to it
fails instead of waiting forever.

In a cluster, the URL may be fetched through any node: that node checks the
token, finds the node that runs the job (L{DownloadRelay.locate}) and fetches
the download from it with a short-lived credential
(L{DownloadRelay.credential}) the owner checks (L{DownloadRelay.verify})
instead of the token, already used.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import TYPE_CHECKING, Any, Callable, Final

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from .logs import logger
from .pipe import Pipe, PipeBrokenError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

__all__ = [
    "RELAY_HEADER",
    "RELAY_VALIDITY",
    "DownloadGone",
    "DownloadNotBegun",
    "DownloadRelay",
    "Downloads",
    "PendingDownload",
]

log = logger(__name__)


class DownloadGone(Exception):
    """
    The download was not begun before its deadline (HTTP 410).
    """


class DownloadNotBegun(PipeBrokenError):
    """
    Nobody began the download in time: the job's output pipe is broken with this.
    """


@attrs.define(eq=False)
class PendingDownload:
    """
    A download C{core.download} prepared and nobody has begun yet.

    @ivar deadline: the clock time by which it must begin.
    @ivar expired: the deadline passed; the pipe was aborted.
    """

    job_id: int
    pipe: Pipe
    filename: str
    buffered: bool
    deadline: float
    timer: IDelayedCall | None = None
    expired: bool = False


class Downloads:
    """
    The downloads waiting to begin, by job id.

    Each must begin within C{unbuffered_deadline} or C{buffered_deadline}
    seconds; past it the job's output pipe is aborted (a job blocked writing
    to it fails instead of waiting forever) and its URL answers 410 for
    another C{forget_after} seconds.

    @ivar clock: the L{IReactorTime} the deadlines run on.
    """

    unbuffered_deadline: float = 60.0
    buffered_deadline: float = 3600.0
    forget_after: float = 3600.0

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._pending: dict[int, PendingDownload] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, job_id: int, pipe: Pipe, filename: str, buffered: bool) -> PendingDownload:
        """
        Expect the download of C{pipe}, the output of job C{job_id}.
        """
        self._forget_expired()
        previous = self._pending.pop(job_id, None)
        if previous is not None:
            self._drop(previous, DownloadNotBegun("Another download of this job was prepared"))
        delay = self.buffered_deadline if buffered else self.unbuffered_deadline
        download = PendingDownload(job_id, pipe, filename, buffered, self.clock.seconds() + delay)
        download.timer = self.clock.callLater(delay, self._expire, download, delay)
        self._pending[job_id] = download
        return download

    def get(self, job_id: int) -> PendingDownload | None:
        """
        The download of job C{job_id} waiting to begin (perhaps expired), or L{None}.
        """
        return self._pending.get(job_id)

    def claim(self, job_id: int) -> PendingDownload:
        """
        Begin the download of job C{job_id}: it is no longer pending.

        @raise KeyError: there is none.
        @raise DownloadGone: its deadline passed.
        """
        download = self._pending[job_id]
        if download.expired:
            raise DownloadGone(f"The download of job {job_id} was not begun in time")
        del self._pending[job_id]
        if download.timer is not None and download.timer.active():
            download.timer.cancel()
        download.timer = None
        return download

    def stop(self) -> None:
        """
        The daemon stops: drop every download not begun and release its pipe.
        """
        pending, self._pending = self._pending, {}
        for download in pending.values():
            self._drop(download, DownloadNotBegun("The daemon stopped before the download began"))

    def _expire(self, download: PendingDownload, delay: float) -> None:
        download.timer = None
        download.expired = True
        log.info("The download of job {job_id} was not begun in time", job_id=download.job_id)
        download.pipe.abort(DownloadNotBegun(f"The download did not begin within {delay:g} seconds"))

    def _drop(self, download: PendingDownload, reason: Exception) -> None:
        if download.timer is not None and download.timer.active():
            download.timer.cancel()
        download.timer = None
        download.pipe.abort(reason)

    def _forget_expired(self) -> None:
        now = self.clock.seconds()
        for job_id, download in list(self._pending.items()):
            if download.expired and download.deadline + self.forget_after <= now:
                del self._pending[job_id]


#: The header in which a node presents its L{DownloadRelay.credential}.
RELAY_HEADER: Final = b"X-Midjobs-Relay"

#: Seconds a relay credential is good for.
RELAY_VALIDITY: Final = 10.0


class DownloadRelay:
    """
    How this node fetches downloads of jobs other nodes run, and lets other
    nodes fetch the downloads of its own jobs: every node of a cluster has
    one, with the same C{secret}.  A single daemon has none.

    A credential reads C{<node>.<expires>.<mac>}: the node that asks, the
    integral clock time until which it holds, and the hex HMAC-SHA256 of
    C{download|<job id>|<node>|<expires>} with the shared secret.  It is good
    for one job, for L{RELAY_VALIDITY} seconds (the nodes' clocks must agree
    within a few seconds).

    @ivar node: this node's name in the cluster.
    @ivar locate: C{locate(job_id)} fires with the base URL
        (C{http(s)://host:port}) of the node that runs job C{job_id}, or
        L{None} if that is this node or none.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        node: str,
        secret: bytes,
        locate: Callable[[int], Deferred[str | None]],
    ) -> None:
        if not secret:
            raise ValueError("A download relay needs a secret")
        self._clock = reactor
        self.node = node
        self._secret = secret
        self.locate = locate

    def credential(self, job_id: int) -> str:
        """
        What this node presents in L{RELAY_HEADER} to fetch the download of job C{job_id}.
        """
        expires = math.ceil(self._clock.seconds() + RELAY_VALIDITY)
        return f"{self.node}.{expires}.{self._mac(job_id, self.node, expires)}"

    def verify(self, credential: str, job_id: int) -> str | None:
        """
        The name of the node that presented C{credential} for the download
        of job C{job_id}, if it is genuine and current; else L{None}.
        """
        node, _, rest = credential.rpartition(".")
        node, _, expires_text = node.rpartition(".")
        if not node or not expires_text.isdigit() or len(expires_text) > 20:
            return None
        expires = int(expires_text)
        now = self._clock.seconds()
        if not now <= expires <= now + 2 * RELAY_VALIDITY:
            return None
        if not hmac.compare_digest(rest.encode("ascii", "replace"), self._mac(job_id, node, expires).encode("ascii")):
            return None
        return node

    def _mac(self, job_id: int, node: str, expires: int) -> str:
        message = f"download|{job_id}|{node}|{expires}".encode("utf-8")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()
