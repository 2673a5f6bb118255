"""
Uploading files to a job with treq: C{POST /_upload}, the files streamed from file objects.

    with open("config.tar", "rb") as f:
        job_id = await upload("http://127.0.0.1:6000", "config.upload", [], [f], auth=("root", "pw"))

The body is a C{multipart/form-data} stream: the C{data} part, then one
C{file} part per file, read from the file objects as the daemon takes them
(it reads only as fast as the job does).  Nothing holds a whole file in
memory.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from base64 import b64encode
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Iterable, Sequence, Union

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import IBodyProducer

from ._http import http_url, no_answer_reason, read_prefix, with_client

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["UploadError", "UploadFile", "upload"]

#: The most of an error response's body kept as its reason.
#: How much of a file is read at once.
_READ_SIZE = 256 * 1024

#: A file to upload: a binary file object (its name is the basename of its
#: C{name} attribute, if it has one), C{(filename, file)}, or
#: C{(filename, content_type, file)}.
UploadFile = Union[BinaryIO, tuple[str, BinaryIO], tuple[str, str, BinaryIO]]


class UploadError(Exception):
    """
    An upload failed.

    @ivar status: the HTTP status the daemon answered (401, 403, 400, 405,
        412, 413, 422, ...), or L{None} if no answer came.
    @ivar reason: what went wrong: the daemon's C{error} for an error status.
    """

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.reason}" if self.status is not None else self.reason


def _upload_url(url: str) -> bytes:
    return urllib.parse.urljoin(http_url(url), "/_upload").encode("ascii")


def _authorization(auth: tuple[str, str] | None, token: str | None, api_key: str | None) -> bytes | None:
    given = [value for value in (auth, token, api_key) if value is not None]
    if len(given) > 1:
        raise ValueError("Give at most one of auth, token and api_key")
    if auth is not None:
        user, password = auth
        return b"Basic " + b64encode(f"{user}:{password}".encode("utf-8"))
    if token is not None:
        return b"Token " + token.encode("utf-8")
    if api_key is not None:
        return b"Bearer " + api_key.encode("utf-8")
    return None


class _Stream:
    """
    A file object that cannot seek (a pipe, a socket), as one that has no
    C{seek} at all: C{FileBodyProducer} then streams it with an unknown length.
    """

    def __init__(self, file_obj: IO[bytes]) -> None:
        self._file = file_obj

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def close(self) -> None:
        self._file.close()


def _seekable(file_obj: IO[bytes]) -> bool:
    seekable = getattr(file_obj, "seekable", None)
    if seekable is not None and not seekable():
        return False
    try:
        file_obj.tell()
    except (AttributeError, OSError):
        return False
    return True


def _file_fields(files: Iterable[UploadFile]) -> list[tuple[str, tuple[str | None, str, IBodyProducer]]]:
    fields: list[tuple[str, tuple[str | None, str, IBodyProducer]]] = []
    for item in files:
        filename: str | None
        content_type: str | None
        file_obj: IO[bytes] | _Stream
        if isinstance(item, tuple):
            if len(item) == 2:
                filename, content_type, file_obj = item[0], None, item[1]
            elif len(item) == 3:
                filename, content_type, file_obj = item
            else:
                raise TypeError("A file is a file object, (filename, file) or (filename, content_type, file)")
        else:
            file_obj, content_type = item, None
            name = getattr(item, "name", None)
            filename = os.path.basename(name) if isinstance(name, str) else None
        if not _seekable(file_obj):
            file_obj = _Stream(file_obj)
        producer = FileBodyProducer(file_obj, readSize=_READ_SIZE)  # type: ignore[no-untyped-call]  # not annotated in Twisted
        fields.append(("file", (filename, content_type or "application/octet-stream", producer)))
    return fields


def upload(
    url: str,
    method: str,
    params: Sequence[Any],
    files: Sequence[UploadFile],
    *,
    auth: tuple[str, str] | None = None,
    token: str | None = None,
    api_key: str | None = None,
    client: HTTPClient | None = None,
    reactor: IReactorTime | None = None,
    wait: Client | None = None,
    insecure: bool = False,
    ca_file: str | None = None,
) -> Deferred[Any]:
    """
    Start job C{method(*params)} with C{files} as its input pipes.

    The job reads the first file from C{job.pipes.input} and all of them by
    iterating C{job.pipes.inputs}.  This returns once the daemon has handed
    every file to the job, or, with C{wait}, once the job has ended.

    @param url: the daemon's base URL, C{http://host:port} or
        C{https://host:port} (a URL ending in C{/_upload}, or the
        C{ws://}/C{wss://} URL of its WebSocket, works too).
    @param files: one to five files, each a binary file object, C{(filename,
        file)} or C{(filename, content_type, file)}.  A file object that can
        seek is sent with its length; one that cannot is streamed chunked.
    @param auth: C{(username, password)}, sent as HTTP Basic authentication.
    @param token: a token (C{Authorization: Token}).
    @param api_key: an API key (C{Authorization: Bearer}).
    @param client: a C{treq.client.HTTPClient} to use instead of making one.
    @param reactor: the reactor for a client made here (the global one by default).
    @param wait: a logged-in L{midjobs.client.Client} through which to wait
        for the job (with C{core.job_wait}); HTTP alone cannot follow a job.
    @param insecure: over C{https://}, do not verify the server's certificate.
    @param ca_file: over C{https://}, trust the certificate authorities of
        this PEM file instead of the system's.
    @return: fires with the job id, or with C{wait} the job's result; fails
        with L{UploadError} for any answer other than 200, or if no answer
        came, and with the job's error (L{ClientCallError}, L{JobAborted})
        when C{wait} is given and the job did not succeed.
    """
    headers: dict[bytes | str, list[bytes | str]] = {b"Accept": [b"application/json"]}
    authorization = _authorization(auth, token, api_key)
    if authorization is not None:
        headers[b"Authorization"] = [authorization]
    fields = _file_fields(files)
    data = json.dumps({"method": method, "params": list(params)})

    target = _upload_url(url)

    async def run(client: HTTPClient) -> Any:
        # treq puts the plain fields before the files: "data" comes first.
        try:
            response = await client.post(
                target,
                headers=headers,
                data=[("data", data)],
                # treq's multipart writes a part with no file name for None,
                # though its annotation asks for a str.
                files=fields,  # type: ignore[arg-type]
            )
        except Exception as e:
            raise UploadError(None, f"No answer from {target.decode()}: {no_answer_reason(e)}") from e
        try:
            body = await read_prefix(response)
        except Exception as e:
            if response.code == 200:
                raise UploadError(200, f"The answer was cut short: {e}") from e
            body = b""
        text = body.decode("utf-8", "replace").strip()
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if response.code != 200:
            reason = answer.get("error") if isinstance(answer, dict) else None
            phrase = response.phrase.decode("latin-1") if response.phrase else ""
            raise UploadError(response.code, str(reason or text or phrase))
        job_id = answer.get("job_id") if isinstance(answer, dict) else None
        if not isinstance(job_id, int):
            raise UploadError(200, f"The answer holds no job id: {text[:200]!r}")
        if wait is not None:
            return await wait.call_job("core.job_wait", job_id)
        return job_id

    return with_client(client, reactor, run, insecure=insecure, ca_file=ca_file)
