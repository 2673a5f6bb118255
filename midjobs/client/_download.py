"""
Downloading a job's output with treq: the URL C{core.download} returned, streamed into a file.

    job_id, path = await client.call("core.download", "system.debug", [], "debug.txz")
    with open("debug.txz", "wb") as f:
        size = await download("http://127.0.0.1:6000", path, f)

The body is written to the file as it arrives; nothing holds it all in memory.
A response that ends early is an error, never a short file.
"""

from __future__ import annotations

import urllib.parse
from typing import Protocol

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import ResponseFailed

from ._http import http_url, no_answer_reason, read_prefix, with_client

__all__ = ["DownloadError", "download"]

#: The most of an error response's body kept as its reason.


class Writable(Protocol):
    """
    Where a download goes: anything with a C{write(bytes)} method.
    """

    def write(self, data: bytes, /) -> object:
        """
        Take the next bytes of the body.
        """


class DownloadError(Exception):
    """
    A download failed.

    @ivar status: the HTTP status (C{200} when a successful response was cut
        short), or L{None} if no response came.
    @ivar reason: what went wrong: the daemon's message for an error status.
    """

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.reason}" if self.status is not None else self.reason


def _url(base_url: str, path_or_url: str) -> bytes:
    parts = urllib.parse.urlsplit(path_or_url)
    url = path_or_url if parts.scheme else urllib.parse.urljoin(http_url(base_url), path_or_url)
    return url.encode("ascii")


def download(
    base_url: str,
    path_or_url: str,
    file_obj: Writable,
    *,
    reactor: IReactorTime | None = None,
    client: HTTPClient | None = None,
    insecure: bool = False,
    ca_file: str | None = None,
) -> Deferred[int]:
    """
    GET C{path_or_url} (a path such as C{core.download} returns, resolved
    against C{base_url}, or a full URL) and write the body to C{file_obj}.

    @param base_url: the daemon's base URL, C{http://host:port} or
        C{https://host:port} (or the C{ws://}/C{wss://} URL of its WebSocket).
    @param file_obj: anything with a C{write(bytes)} method.
    @param reactor: the reactor for a client made here (the global one by default).
    @param client: a C{treq.client.HTTPClient} to use instead of making one.
    @param insecure: over C{https://}, do not verify the server's certificate.
    @param ca_file: over C{https://}, trust the certificate authorities of
        this PEM file instead of the system's.
    @return: fires with the number of bytes written; fails with
        L{DownloadError} for a status other than 200 or a body that ended
        early (the file then holds a partial body the caller must discard).
    """
    import treq

    url = _url(base_url, path_or_url)

    async def run(client: HTTPClient) -> int:
        try:
            response = await client.get(url)
        except Exception as e:
            raise DownloadError(None, f"No response from {url.decode()}: {no_answer_reason(e)}") from e
        if response.code != 200:
            try:
                body = await read_prefix(response)
            except Exception:
                body = b""
            text = body.decode("utf-8", "replace").strip()
            phrase = response.phrase.decode("latin-1") if response.phrase else ""
            raise DownloadError(response.code, text or phrase)
        size = 0

        def write(data: bytes) -> None:
            nonlocal size
            file_obj.write(data)
            size += len(data)

        try:
            await treq.collect(response, write)
        except ResponseFailed as e:
            raise DownloadError(200, f"The download was cut short after {size} bytes") from e
        length = response.length
        if isinstance(length, int) and size != length:
            raise DownloadError(200, f"The download was cut short after {size} of {length} bytes")
        return size

    return with_client(client, reactor, run, insecure=insecure, ca_file=ca_file)
