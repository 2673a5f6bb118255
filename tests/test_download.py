"""
Downloads: C{core.download}, C{core.job_download_logs}, C{GET /_download/<id>}
and the tokens behind them, against a real daemon with real HTTP clients
(treq, a Twisted Agent that pauses its transport, a raw TCP client, wget).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import attrs
import pytest
import pytest_twisted
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone

from conftest import subprocess_env
from download_services import BLOCK, gate, pattern_sha256
from midjobs.auth import (
    TOKEN,
    UNIX_SOCKET,
    AvatarId,
    InvalidToken,
    TokenChecker,
    TokenCredentials,
    TokenStore,
    User,
)
from midjobs.auth.tokens import TokenAvatarId, origin_of
from midjobs.client import ClientCallError, JSONRPCError, connect
from midjobs.client._download import DownloadError, download
from midjobs.http._download import content_disposition, safe_filename
from midjobs.pipe import Pipe, PipeBrokenError
from midjobs.transfers import DownloadGone, DownloadNotBegun, Downloads

MiB = 1024 * 1024


@pytest.fixture
def settings(settings: Any) -> Any:
    return attrs.evolve(settings, plugins=(*settings.plugins, "download_services"))


# Helpers.


def timeout(d: Deferred[Any], seconds: float = 60) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


async def wait_until(predicate: Callable[[], bool], seconds: float = 30) -> None:
    """
    Wait, turning the reactor, until C{predicate()} holds.
    """
    deadline = reactor.seconds() + seconds
    while not predicate():
        assert reactor.seconds() < deadline, "the condition never came true"
        await deferLater(reactor, 0.005, lambda: None)


class HashSink:
    """
    A file object that keeps only the SHA-256 and the size of what it is given.
    """

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)


async def start_download(
    client: Any, method: str, args: list, filename: str = "out.bin", buffered: bool = False
) -> tuple[int, str]:
    job_id, path = await client.call("core.download", method, args, filename, buffered)
    assert path.startswith(f"/_download/{job_id}?auth_token=")
    return job_id, path


async def fetch(daemon: Any, path: str) -> tuple[int, Any, bytes]:
    """
    GET C{path}: status, headers, whole body.
    """
    import treq

    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        response = await treq.get(daemon.http_url + path, pool=pool)
        body = await treq.content(response)
        return response.code, response.headers, body
    finally:
        await pool.closeCachedConnections()


def token_of(path: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)["auth_token"][0]


async def wget(daemon: Any, path: str, directory: Any) -> tuple[int, bytes]:
    """
    Run C{wget --content-disposition} for C{path} into C{directory}: exit code, stderr.
    """
    directory.mkdir(parents=True, exist_ok=True)
    out, err, code = await timeout(
        getProcessOutputAndValue(
            "wget",
            ["--tries=1", "--content-disposition", "-q", "-P", str(directory), daemon.http_url + path],
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
    )
    return code, err


def job_of(daemon: Any, job_id: int) -> Any:
    return daemon.middleware.jobs.get(job_id)


async def ended(daemon: Any, job_id: int) -> Any:
    job = job_of(daemon, job_id)
    await timeout(job.wait())
    return job


def pipe_level(pipe: Pipe) -> int:
    return pipe.in_memory


# Whole downloads.


@pytest.mark.parametrize("method", ["dl.thread_write", "dl.async_write"])
@pytest_twisted.ensureDeferred
async def test_download_with_treq_helper(daemon: Any, admin_client: Any, method: str) -> None:
    size = 3 * MiB + 123
    job_id, path = await start_download(admin_client, method, [size])
    sink = HashSink()
    assert await timeout(download(daemon.http_url, path, sink, reactor=reactor)) == size
    assert sink.sha.hexdigest() == pattern_sha256(size)
    job = await ended(daemon, job_id)
    assert job.state.value == "SUCCESS" and job.result == size


@pytest_twisted.ensureDeferred
async def test_download_with_full_url_into_a_file(daemon: Any, admin_client: Any, tmp_path: Any) -> None:
    job_id, path = await start_download(admin_client, "dl.thread_write", [100_000])
    target = tmp_path / "out.bin"
    with open(target, "wb") as f:
        assert await timeout(download("http://ignored", daemon.http_url + path, f)) == 100_000
    assert hashlib.sha256(target.read_bytes()).hexdigest() == pattern_sha256(100_000)


@pytest_twisted.ensureDeferred
async def test_response_headers_and_chunked_encoding(daemon: Any, admin_client: Any) -> None:
    job_id, path = await start_download(admin_client, "dl.thread_write", [10_000], "data.bin")
    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port), RawGet(path))
    await timeout(client.lost)
    head, _, body = bytes(client.data).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    assert headers[b"content-type"] == b"application/octet-stream"
    assert headers[b"content-disposition"] == b'attachment; filename="data.bin"'
    assert headers[b"transfer-encoding"] == b"chunked"
    assert b"content-length" not in headers
    assert body.endswith(b"\r\n0\r\n\r\n")


@pytest_twisted.ensureDeferred
async def test_wget_content_disposition(daemon: Any, admin_client: Any, tmp_path: Any) -> None:
    size = 2 * MiB + 5
    job_id, path = await start_download(admin_client, "dl.thread_write", [size], "report.bin")
    code, err = await wget(daemon, path, tmp_path / "wget")
    assert code == 0, err
    assert os.listdir(tmp_path / "wget") == ["report.bin"]
    assert hashlib.sha256((tmp_path / "wget" / "report.bin").read_bytes()).hexdigest() == pattern_sha256(size)
    assert (await ended(daemon, job_id)).state.value == "SUCCESS"


@pytest.mark.parametrize(
    "filename, saved",
    [
        ("résumé 日本.txt", "résumé 日本.txt"),
        ("../../etc/passwd", ".._.._etc_passwd"),
        ('evil"\r\nname.bin', "evilname.bin"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_wget_saves_the_sanitised_name(
    daemon: Any, admin_client: Any, tmp_path: Any, filename: str, saved: str
) -> None:
    job_id, path = await start_download(admin_client, "dl.thread_write", [1000], filename)
    before = set(os.listdir(tmp_path))
    code, err = await wget(daemon, path, tmp_path / "wget" / "in")
    assert code == 0, err
    assert os.listdir(tmp_path / "wget" / "in") == [saved]
    assert os.listdir(tmp_path / "wget") == ["in"]
    assert set(os.listdir(tmp_path)) == before | {"wget"}


@pytest_twisted.ensureDeferred
async def test_large_download_checked_by_sha256(daemon: Any, admin_client: Any) -> None:
    size = 300 * MiB
    job_id, path = await start_download(admin_client, "dl.thread_write", [size], "big.bin")
    sink = HashSink()
    assert await timeout(download(daemon.http_url, path, sink, reactor=reactor), 120) == size
    assert sink.sha.hexdigest() == pattern_sha256(size)
    assert (await ended(daemon, job_id)).state.value == "SUCCESS"


# Flow control and broken transfers.


class PausingBody(Protocol):
    """
    A response body consumer that pauses its transport after C{pause_at} bytes.
    """

    def __init__(self, pause_at: int | None = None) -> None:
        self.pause_at = pause_at
        self.sha = hashlib.sha256()
        self.received = 0
        self.paused: Deferred[int] = Deferred()
        self.done: Deferred[Any] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.sha.update(data)
        self.received += len(data)
        if self.pause_at is not None and self.received >= self.pause_at:
            self.pause_at = None
            self.transport.pauseProducing()
            self.paused.callback(self.received)

    def connectionLost(self, reason: Any) -> None:
        self.reason = reason
        self.done.callback(None)


class ReceiveUntil(PausingBody):
    """
    Counts a body and fires C{reached} once C{threshold} bytes have come.
    """

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold
        self.reached: Deferred[int] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if not self.reached.called and self.received >= self.threshold:
            self.reached.callback(self.received)


async def get_body(daemon: Any, path: str, body: Protocol) -> Any:
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = await Agent(reactor, pool=pool).request(b"GET", (daemon.http_url + path).encode())
    assert response.code == 200
    response.deliverBody(body)
    return response


@pytest.mark.parametrize("method", ["dl.thread_write", "dl.async_write"])
@pytest_twisted.ensureDeferred
async def test_slow_client_holds_the_job_back(daemon: Any, admin_client: Any, method: str) -> None:
    size = 96 * MiB
    job_id, path = await start_download(admin_client, method, [size])
    job = job_of(daemon, job_id)
    pipe = job.pipes.output
    body = PausingBody(pause_at=MiB)
    await get_body(daemon, path, body)
    await timeout(body.paused)

    # The kernel's and the transport's buffers fill, the response pauses the
    # pipe, the pipe fills to its high water, and the job's writes wait.
    # (While the kernel's buffers still fill, the response may resume the
    # pipe for a moment: wait until that is over.)
    async def blocked() -> bool:
        if not (pipe.delivery_paused and pipe_level(pipe) >= pipe.high_water):
            return False
        before = job.progress["extra"]
        for _ in range(5):
            await admin_client.call("core.ping")
        return pipe.delivery_paused and job.progress["extra"] == before

    deadline = reactor.seconds() + 30
    while not await blocked():
        assert reactor.seconds() < deadline, "the job's writes never waited"
        await deferLater(reactor, 0.01, lambda: None)
    # Held back: what the job has written beyond what the client read stays
    # within the buffers on the way (the pipe's high water, the transport's and
    # the kernel's; the kernel may still take in a little more as it compacts
    # its queues), however long the client waits.
    for _ in range(10):
        await admin_client.call("core.ping")
    assert job.progress["extra"] - body.received <= pipe.high_water + 16 * MiB
    assert job.state.value == "RUNNING"
    assert pipe.delivery_paused and pipe_level(pipe) <= pipe.high_water

    body.transport.resumeProducing()
    await timeout(body.done)
    assert body.reason.check(ResponseDone)
    assert body.received == size
    assert body.sha.hexdigest() == pattern_sha256(size)
    assert (await ended(daemon, job_id)).state.value == "SUCCESS"


class RawGet(Protocol):
    """
    An HTTP/1.1 GET over a bare TCP connection; aborts it after C{abort_after} bytes.
    """

    def __init__(self, path: str, abort_after: int | None = None) -> None:
        self.path = path
        self.abort_after = abort_after
        self.data = bytearray()
        self.aborted: Deferred[int] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(
            b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % self.path.encode()
        )

    def dataReceived(self, data: bytes) -> None:
        if self.abort_after is None:
            self.data += data
            return
        if len(self.data) < 4096:
            self.data += data[:4096]
        self.abort_after -= len(data)
        if self.abort_after <= 0 and not self.aborted.called:
            self.transport.abortConnection()
            self.aborted.callback(None)

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)


@pytest_twisted.ensureDeferred
async def test_client_disconnecting_fails_the_job(daemon: Any, admin_client: Any) -> None:
    job_id, path = await start_download(admin_client, "dl.thread_write", [512 * MiB])
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port)
    client = await connectProtocol(endpoint, RawGet(path, 2 * MiB))
    await timeout(client.aborted)
    assert client.data.startswith(b"HTTP/1.1 200 OK\r\n")
    job = await ended(daemon, job_id)
    assert job.state.value == "FAILED"
    assert job.error == "The reading side of the pipe went away"
    assert job.exc_info["type"] == "PipeBrokenError"
    assert job.progress["extra"] < 512 * MiB


@pytest_twisted.ensureDeferred
async def test_job_failing_mid_download_cuts_the_response(daemon: Any, admin_client: Any) -> None:
    job_id, path = await start_download(admin_client, "dl.fail_after", [2 * MiB, "disk on fire"])
    sink = HashSink()
    with pytest.raises(DownloadError) as info:
        await timeout(download(daemon.http_url, path, sink, reactor=reactor))
    assert info.value.status == 200
    assert "cut short" in info.value.reason
    assert 0 < sink.size < 2 * MiB + 1
    job = await ended(daemon, job_id)
    assert job.state.value == "FAILED" and "disk on fire" in job.error


@pytest_twisted.ensureDeferred
async def test_wget_fails_when_the_job_fails_mid_download(
    daemon: Any, admin_client: Any, tmp_path: Any
) -> None:
    job_id, path = await start_download(admin_client, "dl.fail_after", [3 * MiB, "broken"], "partial.bin")
    code, err = await wget(daemon, path, tmp_path / "wget")
    assert code != 0
    assert (await ended(daemon, job_id)).state.value == "FAILED"


@pytest_twisted.ensureDeferred
async def test_job_failed_before_download_answers_an_error(daemon: Any, admin_client: Any) -> None:
    job_id, path = await start_download(admin_client, "dl.fail_after", [10, "nothing to give"])
    assert (await ended(daemon, job_id)).state.value == "FAILED"
    with pytest.raises(DownloadError) as info:
        await timeout(download(daemon.http_url, path, HashSink(), reactor=reactor))
    assert info.value.status == 500
    assert "nothing to give" in info.value.reason


# Tokens and statuses.


@pytest_twisted.ensureDeferred
async def test_missing_forged_reused_and_misbound_tokens_get_401(daemon: Any, admin_client: Any) -> None:
    job_a, path_a = await start_download(admin_client, "dl.thread_write", [1000])
    job_b, path_b = await start_download(admin_client, "dl.thread_write", [2000])
    assert (await fetch(daemon, f"/_download/{job_a}"))[0] == 401
    assert (await fetch(daemon, f"/_download/{job_a}?auth_token="))[0] == 401
    assert (await fetch(daemon, f"/_download/{job_a}?auth_token=forged-token"))[0] == 401
    assert (await fetch(daemon, f"/_download/{job_a}?auth_token=%FF%FE"))[0] == 401
    two = f"/_download/{job_a}?auth_token={token_of(path_a)}&auth_token={token_of(path_a)}"
    assert (await fetch(daemon, two))[0] == 401
    # A's token on B's download: refused, and A's token is still good for A.
    code, headers, body = await fetch(daemon, f"/_download/{job_b}?auth_token={token_of(path_a)}")
    assert code == 401
    assert headers.getRawHeaders(b"content-type") == [b"text/plain; charset=utf-8"]
    code, headers, body = await fetch(daemon, path_a)
    assert code == 200 and hashlib.sha256(body).hexdigest() == pattern_sha256(1000)
    # Used once: never again.
    assert (await fetch(daemon, path_a))[0] == 401
    with pytest.raises(DownloadError) as info:
        await download(daemon.http_url, path_a, HashSink(), reactor=reactor)
    assert info.value.status == 401
    code, _, body = await fetch(daemon, path_b)
    assert code == 200 and len(body) == 2000


@pytest_twisted.ensureDeferred
async def test_expired_token_gets_401(daemon: Any, admin_client: Any, monkeypatch: Any) -> None:
    clock = Clock()
    monkeypatch.setattr(daemon.middleware.tokens, "clock", clock)
    job_id, path = await start_download(admin_client, "dl.thread_write", [1000])
    clock.advance(299)
    assert (await daemon.middleware.tokens.lookup(token_of(path))) is not None
    clock.advance(1)
    assert (await fetch(daemon, path))[0] == 401


@pytest_twisted.ensureDeferred
async def test_unknown_job_gets_404(daemon: Any, admin_client: Any) -> None:
    job_id, path = await start_download(admin_client, "dl.thread_write", [1000])
    assert (await fetch(daemon, f"/_download/99999?auth_token={token_of(path)}"))[0] == 404
    assert (await fetch(daemon, f"/_download/nope?auth_token={token_of(path)}"))[0] == 404
    # The token was not used up by those.
    assert (await fetch(daemon, path))[0] == 200


@pytest.mark.parametrize("buffered, deadline", [(False, 60), (True, 3600)])
@pytest_twisted.ensureDeferred
async def test_download_not_begun_in_time_gets_410(
    daemon: Any, admin_client: Any, monkeypatch: Any, buffered: bool, deadline: int
) -> None:
    clock = Clock()
    monkeypatch.setattr(daemon.middleware.downloads, "clock", clock)
    size = 4 * MiB
    job_id, path = await start_download(admin_client, "dl.thread_write", [size], buffered=buffered)
    job = job_of(daemon, job_id)
    if buffered:
        await timeout(job.wait())
        assert job.state.value == "SUCCESS"
    else:
        await wait_until(lambda: pipe_level(job.pipes.output) >= job.pipes.output.high_water)
    clock.advance(deadline - 1)
    assert not job.pipes.output.failure
    clock.advance(1)
    await timeout(job.wait())
    if buffered:
        assert job.state.value == "SUCCESS"
    else:
        # The job blocked on its unbuffered pipe fails instead of hanging.
        assert job.state.value == "FAILED"
        assert job.error == f"The download did not begin within {deadline} seconds"
    code, _, body = await fetch(daemon, path)
    assert code == 410
    assert b"not begun in time" in body


@pytest_twisted.ensureDeferred
async def test_head_is_refused_without_using_the_token(daemon: Any, admin_client: Any) -> None:
    import treq

    job_id, path = await start_download(admin_client, "dl.thread_write", [1000])
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = await treq.head(daemon.http_url + path, pool=pool)
    await pool.closeCachedConnections()
    assert response.code == 405
    assert (await fetch(daemon, path))[0] == 200


# Buffered downloads.


@pytest_twisted.ensureDeferred
async def test_buffered_download_after_the_job_ended(daemon: Any, admin_client: Any) -> None:
    size = 5 * MiB + 7
    job_id, path = await start_download(admin_client, "dl.thread_write", [size], buffered=True)
    job = await ended(daemon, job_id)
    assert job.state.value == "SUCCESS"
    sink = HashSink()
    assert await timeout(download(daemon.http_url, path, sink, reactor=reactor)) == size
    assert sink.sha.hexdigest() == pattern_sha256(size)


@pytest_twisted.ensureDeferred
async def test_buffered_download_follows_a_running_job(daemon: Any, admin_client: Any) -> None:
    first, size = 8 * BLOCK, 40 * BLOCK
    opened = gate(f"follow-{id(daemon)}")
    job_id, path = await start_download(
        admin_client, "dl.gated_write", [size, first, f"follow-{id(daemon)}"], buffered=True
    )
    job = job_of(daemon, job_id)
    await wait_until(lambda: job.progress["extra"] == first)
    body = ReceiveUntil(first)
    await get_body(daemon, path, body)
    assert await timeout(body.reached) == first
    assert job.state.value == "RUNNING"
    opened.set()
    await timeout(body.done)
    assert body.reason.check(ResponseDone)
    assert body.received == size and body.sha.hexdigest() == pattern_sha256(size)
    assert (await ended(daemon, job_id)).state.value == "SUCCESS"


# core.job_download_logs


@pytest_twisted.ensureDeferred
async def test_job_download_logs(daemon: Any, admin_client: Any) -> None:
    logged = await ended(daemon, await admin_client.call("sample.logging_job", 2000))
    assert logged.result == 2000
    url = await admin_client.call("core.job_download_logs", logged.id, "job.log")
    reader_id = int(url.split("/")[2].split("?")[0])
    assert reader_id != logged.id
    content = io.BytesIO()
    await timeout(download(daemon.http_url, url, content, reactor=reactor))
    assert content.getvalue() == b"".join(f"line {i}\n".encode() for i in range(2000))
    assert (await ended(daemon, reader_id)).state.value == "SUCCESS"


@pytest_twisted.ensureDeferred
async def test_job_download_logs_buffered_with_wget(daemon: Any, admin_client: Any, tmp_path: Any) -> None:
    logged = await ended(daemon, await admin_client.call("sample.logging_job", 3))
    url = await admin_client.call("core.job_download_logs", logged.id, "logs of job.txt", True)
    code, err = await wget(daemon, url, tmp_path / "wget")
    assert code == 0, err
    assert (tmp_path / "wget" / "logs of job.txt").read_bytes() == b"line 0\nline 1\nline 2\n"


@pytest_twisted.ensureDeferred
async def test_job_download_logs_without_logs(daemon: Any, admin_client: Any) -> None:
    plain = await ended(daemon, await admin_client.call("sample.thread_job", 1))
    for job_id in (plain.id, 99999):
        with pytest.raises(ClientCallError) as info:
            await admin_client.call("core.job_download_logs", job_id, "x.log")
        assert info.value.errno == errno.ENOENT


# What core.download refuses.


@pytest.mark.parametrize(
    "method, args", [("sample.add", [1, 2]), ("dl.no_output", []), ("core.job_test", [{}])]
)
@pytest_twisted.ensureDeferred
async def test_methods_without_an_output_pipe_are_refused(
    daemon: Any, admin_client: Any, method: str, args: list
) -> None:
    jobs_before = len(daemon.middleware.jobs)
    with pytest.raises(ClientCallError) as info:
        await admin_client.call("core.download", method, args, "x")
    assert info.value.errno == errno.EINVAL
    assert len(daemon.middleware.jobs) == jobs_before
    assert len(daemon.middleware.downloads) == 0


@pytest_twisted.ensureDeferred
async def test_bad_calls_start_nothing(daemon: Any, admin_client: Any, anonymous_client: Any) -> None:
    with pytest.raises(JSONRPCError) as info:
        await admin_client.call("core.download", "no.such_method", [], "x")
    assert info.value.code == -32601
    with pytest.raises(ClientCallError) as info:
        await admin_client.call("core.download", "dl.thread_write", ["not a size"], "x")
    assert info.value.errno == errno.EINVAL
    with pytest.raises(ClientCallError) as info:
        await anonymous_client.call("core.download", "dl.thread_write", [10], "x")
    assert info.value.errname == "ENOTAUTHENTICATED"
    assert len(daemon.middleware.downloads) == 0


@pytest_twisted.ensureDeferred
async def test_trusted_unix_peer_downloads_over_tcp(daemon: Any) -> None:
    client = await connect(daemon.unix_url, reactor=reactor)
    try:
        job_id, path = await start_download(client, "dl.async_write", [300_000], "local.bin")
    finally:
        await client.close()
    sink = HashSink()
    assert await timeout(download(daemon.http_url, path, sink, reactor=reactor)) == 300_000
    assert sink.sha.hexdigest() == pattern_sha256(300_000)


# File names.


@pytest.mark.parametrize(
    "filename, header",
    [
        ("report.txt", 'attachment; filename="report.txt"'),
        ("with space;semi.txt", 'attachment; filename="with space;semi.txt"'),
        ('a"b\r\nSet-Cookie: x=1.txt', 'attachment; filename="abSet-Cookie: x=1.txt"'),
        ("../../etc/passwd", 'attachment; filename=".._.._etc_passwd"'),
        ("C:\\Windows\\evil.exe", 'attachment; filename="C:_Windows_evil.exe"'),
        ("nul\x00tab\tdel\x7fbidi\u202efdp.exe", 'attachment; filename="nultabdelbidifdp.exe"'),
        ("", 'attachment; filename="download"'),
        ("..", 'attachment; filename="download"'),
        ("résumé.pdf", "attachment; filename=\"resume.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"),
        (
            "日本語 file.txt",
            "attachment; filename=\"___ file.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E%20file.txt",
        ),
        ("😀/\"x\".txt", "attachment; filename=\"__x.txt\"; filename*=UTF-8''%F0%9F%98%80_x.txt"),
    ],
)
def test_content_disposition(filename: str, header: str) -> None:
    assert content_disposition(filename) == header.encode("ascii")


def test_safe_filename_limits_the_length() -> None:
    name = safe_filename("é" * 300)
    assert len(name.encode("utf-8")) <= 255 and name == "é" * 127


@pytest.mark.parametrize("filename", ['x"\r\n.bin', "日本.bin"])
@pytest_twisted.ensureDeferred
async def test_content_disposition_on_the_wire(daemon: Any, admin_client: Any, filename: str) -> None:
    job_id, path = await start_download(admin_client, "dl.thread_write", [10], filename)
    code, headers, body = await fetch(daemon, path)
    assert code == 200
    assert headers.getRawHeaders(b"content-disposition") == [content_disposition(filename)]


# auth.generate_token and auth.login_with_token


@pytest_twisted.ensureDeferred
async def test_generate_token_and_login_with_token(daemon: Any, admin_client: Any) -> None:
    token = await admin_client.call("auth.generate_token")
    assert isinstance(token, str) and len(token) >= 40
    for _ in range(2):
        client = await connect(daemon.ws_url, reactor=reactor)
        try:
            assert await client.call("auth.login_with_token", token) is True
            me = await client.call("auth.me")
            assert me["pw_name"] == "admin"
            assert me["credentials"]["type"] == TOKEN
            assert me["privilege"]["roles"] == ["FULL_ADMIN"]
            job_id, path = await start_download(client, "dl.thread_write", [10])
            assert (await fetch(daemon, path))[0] == 200
        finally:
            await client.close()


@pytest_twisted.ensureDeferred
async def test_login_with_token_refusals(daemon: Any, admin_client: Any, anonymous_client: Any) -> None:
    single = await admin_client.call("auth.generate_token", 600, {"purpose": "test"}, False, True)
    assert await anonymous_client.call("auth.login_with_token", single) is True
    await anonymous_client.call("auth.logout")
    assert await anonymous_client.call("auth.login_with_token", single) is False
    assert await anonymous_client.call("auth.login_with_token", "forged") is False
    assert await anonymous_client.call("auth.login_with_token", "") is False
    # A download token is for its download only.
    job_id, path = await start_download(admin_client, "dl.thread_write", [10])
    assert await anonymous_client.call("auth.login_with_token", token_of(path)) is False
    with pytest.raises(ClientCallError) as info:
        await anonymous_client.call("auth.me")
    assert info.value.errname == "ENOTAUTHENTICATED"
    with pytest.raises(ClientCallError) as info:
        await anonymous_client.call("auth.generate_token")
    assert info.value.errname == "ENOTAUTHENTICATED"
    # Still good for its download.
    assert (await fetch(daemon, path))[0] == 200


@pytest_twisted.ensureDeferred
async def test_generate_token_options(daemon: Any, admin_client: Any, anonymous_client: Any) -> None:
    for bad in (0, -1, 86401, 1.5, True, "600"):
        with pytest.raises(ClientCallError) as info:
            await admin_client.call("auth.generate_token", bad)
        assert info.value.errno == errno.EINVAL
    # Both ends are on 127.0.0.1: a token bound to the origin is good here.
    bound = await admin_client.call("auth.generate_token", 60, {}, True)
    record = (await daemon.middleware.tokens.lookup(bound))
    assert record.origin == "127.0.0.1" and record.attributes == {}
    assert await anonymous_client.call("auth.login_with_token", bound) is True


@pytest_twisted.ensureDeferred
async def test_token_of_a_locked_user_is_refused(daemon: Any, anonymous_client: Any) -> None:
    user = await daemon.middleware.users.create({"username": "bob", "password": "bob-pass-1", "roles": []})
    bob = await connect(daemon.ws_url, reactor=reactor)
    try:
        assert await bob.login("bob", "bob-pass-1")
        token = await bob.call("auth.generate_token")
    finally:
        await bob.close()
    await daemon.middleware.users.update(user["id"], {"locked": True})
    assert await anonymous_client.call("auth.login_with_token", token) is False


# The token store, checker and download registry on their own.


def now(answer: Deferred[Any]) -> Any:
    """
    What the memory token store answered: it answers at once.
    """
    results: list[Any] = []
    answer.addBoth(results.append)
    (result,) = results
    if isinstance(result, Failure):
        result.raiseException()
    return result


def make_user(name: str = "alice", credentials_type: str = "LOGIN_PASSWORD") -> User:
    return User(name, frozenset({"READONLY_ADMIN"}), credentials_type)


def test_token_store_expiry_and_pruning() -> None:
    clock = Clock()
    store = TokenStore(clock)
    short = now(store.create(make_user(), 10))
    long = now(store.create(make_user(), 100, attrs={"a": 1}))
    assert len(store) == 2 and short != long
    assert now(store.check(long)).attributes == {"a": 1}
    clock.advance(9.9)
    assert now(store.check(short)).user.username == "alice"
    clock.advance(0.1)
    with pytest.raises(InvalidToken):
        now(store.check(short))
    assert len(store) == 1
    clock.advance(90)
    assert len(store) == 0 and store._expiries == []
    with pytest.raises(ValueError):
        now(store.create(make_user(), 0))


def test_token_store_scope() -> None:
    store = TokenStore(Clock())
    once = now(store.create(make_user(), 60, single_use=True))
    assert now(store.consume(once)).single_use
    with pytest.raises(InvalidToken):
        now(store.consume(once))
    many = now(store.create(make_user(), 60))
    for _ in range(3):
        now(store.consume(many))
    bound = now(store.create(make_user(), 60, single_use=True, job_id=7))
    for job_id in (None, 8):
        with pytest.raises(InvalidToken):
            now(store.consume(bound, job_id=job_id))
    assert now(store.consume(bound, job_id=7)).job_id == 7
    local = now(store.create(make_user(), 60, match_origin="10.0.0.1"))
    with pytest.raises(InvalidToken):
        now(store.check(local, origin="10.0.0.2"))
    with pytest.raises(InvalidToken):
        now(store.check(local))
    assert now(store.check(local, origin="10.0.0.1"))
    assert now(store.revoke(local)) and not now(store.revoke(local))
    assert now(store.lookup("x" * 1000)) is None
    assert many not in repr(now(store.lookup(many)))


def test_origin_of() -> None:
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

    assert origin_of(IPv4Address("TCP", "10.1.2.3", 5555)) == "10.1.2.3"
    assert origin_of(IPv6Address("TCP", "::1", 5555)) == "::1"
    assert origin_of(UNIXAddress(b"/run/x.sock")) == "unix"


@pytest_twisted.ensureDeferred
async def test_token_checker() -> None:
    store = TokenStore(Clock())
    checker = TokenChecker(store)
    token = now(store.create(make_user("bob"), 60, single_use=True))
    avatar_id = await checker.requestAvatarId(TokenCredentials(token))
    assert avatar_id == TokenAvatarId("bob", TOKEN, trusted_peer=False)
    assert isinstance(avatar_id, AvatarId)
    with pytest.raises(UnauthorizedLogin):
        await checker.requestAvatarId(TokenCredentials(token))
    root = now(store.create(make_user("root", UNIX_SOCKET), 60))
    assert (await checker.requestAvatarId(TokenCredentials(root))).trusted_peer
    assert "secret" not in repr(TokenCredentials("secret"))


def test_downloads_registry() -> None:
    clock = Clock()
    downloads = Downloads(clock)
    fast, slow, kept = Pipe(clock), Pipe(clock, buffered=True), Pipe(clock)
    downloads.add(1, fast, "a", buffered=False)
    downloads.add(2, slow, "b", buffered=True)
    downloads.add(3, kept, "c", buffered=False)
    claimed = downloads.claim(3)
    assert claimed.pipe is kept and claimed.timer is None and downloads.get(3) is None
    clock.advance(60)
    assert isinstance(fast.failure.value, DownloadNotBegun)
    assert isinstance(fast.failure.value, PipeBrokenError)
    assert downloads.get(1).expired and slow.failure is None and kept.failure is None
    with pytest.raises(DownloadGone):
        downloads.claim(1)
    with pytest.raises(KeyError):
        downloads.claim(42)
    downloads.stop()
    assert len(downloads) == 0
    assert isinstance(slow.failure.value, DownloadNotBegun)
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_stopping_the_daemon_drops_downloads_not_begun(daemon: Any, admin_client: Any) -> None:
    downloads = daemon.middleware.downloads

    def deadlines() -> list[Any]:
        return [c for c in reactor.getDelayedCalls() if getattr(c.func, "__self__", None) is downloads]

    job_id, path = await start_download(admin_client, "dl.thread_write", [1000], buffered=True)
    job = await ended(daemon, job_id)
    assert len(deadlines()) == 1
    await daemon.middleware.services["core"].stop()
    assert deadlines() == [] and len(downloads) == 0
    assert isinstance(job.pipes.output.failure.value, DownloadNotBegun)
    assert (await fetch(daemon, path))[0] == 404


@pytest_twisted.ensureDeferred
async def test_midclt_and_wget_as_in_the_design(daemon: Any, tmp_path: Any) -> None:
    """
    C{wget --content-disposition "http://host:port"$(midclt call core.download ... | cut -d '"' -f 2)}:
    midclt on the UNIX socket (a trusted peer, no login), wget over TCP.
    """
    midclt = Path(sys.executable).parent / "midclt"
    command = (
        f'wget -q --content-disposition "{daemon.http_url}"'
        f"$({midclt} -u {daemon.unix_url} call core.download dl.thread_write '[1234567]' 'design.bin'"
        " | cut -d '\"' -f 2)"
    )
    out, err, code = await timeout(
        getProcessOutputAndValue(
            "/bin/sh", ["-c", command], env=subprocess_env(), path=str(tmp_path), reactor=reactor
        )
    )
    assert code == 0, err
    saved = tmp_path / "design.bin"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == pattern_sha256(1234567)
