"""
POST /_upload against a real daemon: curl and the treq helper as a user would
run them, raw sockets for broken clients, and an in-memory connection for the
exact flow-control steps.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tracemalloc
from base64 import b64encode
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure

from midjobs.client import ClientCallError, UploadError, connect, upload
from midjobs.config import Settings
from midjobs.errors import CallError
from midjobs.http import make_site
from midjobs.auth import User
from midjobs.http._auth import APIKeyCredentials, IAPIKey
from midjobs.http import _body as body_module
from midjobs.http._body import LINGER_BYTES, READ_SIZE
from midjobs.http._upload import MAX_DATA_SIZE, UploadInterrupted
from midjobs.job import JobState
from midjobs.pipe import Pipe

import upload_services
from conftest import ADMIN, RunningDaemon

UPLOAD_SERVICES = "upload_services"
MiB = 1024 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, plugins=(*settings.plugins, UPLOAD_SERVICES))


@pytest_twisted.async_yield_fixture
async def admin(daemon: RunningDaemon) -> Any:
    await daemon.middleware.users.create({"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
    yield ADMIN


@pytest.fixture
def gate() -> Any:
    """
    A L{upload_services.Gate} registered as C{"gate"} for an C{upload.gated} job.
    """
    gate = upload_services.GATES["gate"] = upload_services.Gate()
    yield gate
    upload_services.GATES.clear()


# -- helpers -------------------------------------------------------------------


async def curl(*args: str) -> tuple[int, Any]:
    """
    Run curl; return the HTTP status and the JSON body.
    """
    out, err, code = await getProcessOutputAndValue("curl", ["-sS", "-w", "\n%{http_code}", *args], reactor=reactor)
    assert code == 0, err.decode()
    body, _, status = out.decode().rpartition("\n")
    return int(status), json.loads(body) if body else None


def data(method: str, *params: Any) -> str:
    return "data=" + json.dumps({"method": method, "params": list(params)})


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def user_arg() -> str:
    return ":".join(ADMIN)


def basic(user: str = ADMIN[0], password: str = ADMIN[1]) -> bytes:
    return b"Basic " + b64encode(f"{user}:{password}".encode())


async def job_of(daemon: RunningDaemon, job_id: int) -> Any:
    job = daemon.middleware.jobs.get(job_id)
    await job.wait()
    return job


def find_job(daemon: RunningDaemon, method: str) -> Any:
    (job,) = [j for j in daemon.middleware.jobs if j.method == method]
    return job


BOUNDARY = b"b0undary"


def part(name: str, content: bytes, filename: str | None = None, content_type: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"Content-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return b"--" + BOUNDARY + b"\r\n" + head.encode() + b"\r\n" + content + b"\r\n"


def data_part(method: str, *params: Any) -> bytes:
    return part("data", json.dumps({"method": method, "params": list(params)}).encode())


END = b"--" + BOUNDARY + b"--\r\n"


def request_head(
    length: int | None, authorization: bytes | None = basic(), extra: bytes = b"", target: bytes = b"/_upload"
) -> bytes:
    head = b"POST " + target + b" HTTP/1.1\r\nHost: localhost\r\n"
    head += b"Content-Type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n"
    if authorization is not None:
        head += b"Authorization: " + authorization + b"\r\n"
    if length is None:
        head += b"Transfer-Encoding: chunked\r\n"
    else:
        head += b"Content-Length: %d\r\n" % length
    return head + extra + b"\r\n"


class RawClient(Protocol):
    """
    A bare HTTP/1.1 client: the test writes the bytes, it parses the answer.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.responses: list[tuple[int, dict[bytes, bytes], bytes]] = []
        self._waiting: list[Deferred[tuple[int, dict[bytes, bytes], bytes]]] = []
        self.closed: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            headers = {name.lower(): value for name, _, value in (line.partition(b": ") for line in lines[1:])}
            length = int(headers.get(b"content-length", b"0"))
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            if status == 100:
                continue
            self.responses.append((status, headers, rest[:length]))
            for waiter in self._waiting:
                waiter.callback(self.responses[-1])
            self._waiting = []

    def response(self) -> Deferred[tuple[int, dict[bytes, bytes], bytes]]:
        if self.responses:
            d: Deferred[Any] = Deferred()
            d.callback(self.responses[-1])
            return d
        d = Deferred()
        self._waiting.append(d)
        return d.addTimeout(10, reactor)

    def connectionLost(self, reason: Failure) -> None:
        for waiter in self._waiting:
            waiter.errback(reason)
        self._waiting = []
        self.reason = reason
        self.closed.callback(None)


async def raw_client(daemon: RunningDaemon) -> RawClient:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port)
    return await connectProtocol(endpoint, RawClient())


async def raw_upload(daemon: RunningDaemon, body: bytes, **head: Any) -> tuple[int, dict[bytes, bytes], Any]:
    client = await raw_client(daemon)
    client.transport.write(request_head(len(body), **head) + body)
    status, headers, payload = await client.response()
    client.transport.loseConnection()
    await client.closed
    return status, headers, json.loads(payload)


def chunked(body: bytes, size: int = 1000) -> bytes:
    out = b"".join(b"%x\r\n" % len(body[i : i + size]) + body[i : i + size] + b"\r\n" for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


async def unwound() -> None:
    """
    Let the call stack that fired an event unwind (one reactor turn, no delay).

    A job fires C{gate.started} from inside the daemon's handling of the
    upload; a test that goes on feeding that upload must wait for it to return.
    """
    await deferLater(reactor, 0, lambda: None)


def buffered(pipe: Pipe) -> int:
    return pipe.in_memory


# -- uploads that work -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_curl_seed_example(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(os.urandom(100_000))
    status, body = await curl(
        "-u", user_arg(), "-F", 'data={"method": "core.job_test", "params": [{}]}', "-F", f"file=@{path}",
        f"{daemon.http_url}/_upload",
    )
    assert status == 200, body
    assert set(body) == {"job_id"}
    job = await job_of(daemon, body["job_id"])
    assert job.state is JobState.SUCCESS
    assert job.result is True


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("method", ["upload.hash", "upload.hash_async"])
async def test_curl_five_files_in_order(daemon: RunningDaemon, admin: Any, tmp_path: Path, method: str) -> None:
    contents = [os.urandom(n) for n in (0, 1, 70_000, 1_000_000, 3 * MiB + 7)]
    args = []
    for i, content in enumerate(contents):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(content)
        args += ["-F", f"file=@{path};type=application/x-test-{i}"]
    status, body = await curl("-u", user_arg(), "-F", data(method), *args, f"{daemon.http_url}/_upload")
    assert status == 200, body
    job = await job_of(daemon, body["job_id"])
    assert job.state is JobState.SUCCESS, job.error
    assert job.result == [
        [f"f{i}.bin", f"application/x-test-{i}", sha256(content), len(content)] for i, content in enumerate(contents)
    ]


@pytest_twisted.ensureDeferred
async def test_curl_chunked_body(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    first, second = os.urandom(2 * MiB + 3), os.urandom(12345)
    (tmp_path / "a").write_bytes(first)
    (tmp_path / "b").write_bytes(second)
    status, body = await curl(
        "-u", user_arg(), "-H", "Transfer-Encoding: chunked", "-F", data("upload.hash"),
        "-F", f"file=@{tmp_path / 'a'}", "-F", f"file=@{tmp_path / 'b'}", f"{daemon.http_url}/_upload",
    )
    assert status == 200, body
    job = await job_of(daemon, body["job_id"])
    assert [row[2:] for row in job.result] == [[sha256(first), len(first)], [sha256(second), len(second)]]


@pytest_twisted.ensureDeferred
async def test_raw_chunked_body_in_small_chunks(daemon: RunningDaemon, admin: Any) -> None:
    content = os.urandom(50_000)
    body = data_part("upload.hash") + part("file", content, "c.bin", "text/plain") + END
    client = await raw_client(daemon)
    client.transport.write(request_head(None) + chunked(body, 777))
    status, _, payload = await client.response()
    assert status == 200, payload
    job = await job_of(daemon, json.loads(payload)["job_id"])
    assert job.result == [["c.bin", "text/plain", sha256(content), len(content)]]
    # The connection stays open for the next request.
    client.transport.write(request_head(None) + chunked(body, 4096))
    client.responses.clear()
    status, _, payload = await client.response()
    assert status == 200, payload
    client.transport.loseConnection()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_curl_300_megabytes(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    block = os.urandom(MiB)
    digest = hashlib.sha256()
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        for i in range(300):
            piece = block[i:] + block[:i]
            f.write(piece)
            digest.update(piece)
    status, body = await curl("-u", user_arg(), "-F", data("upload.hash"), "-F", f"file=@{path}", f"{daemon.http_url}/_upload")
    assert status == 200, body
    job = await job_of(daemon, body["job_id"])
    assert job.result == [["big.bin", "application/octet-stream", digest.hexdigest(), 300 * MiB]]


@pytest_twisted.ensureDeferred
async def test_curl_expect_100_continue(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    path = tmp_path / "x"
    content = os.urandom(3 * MiB)
    path.write_bytes(content)
    out, err, code = await getProcessOutputAndValue(
        "curl",
        ["-sS", "-v", "-H", "Expect: 100-continue", "-u", user_arg(), "-F", data("upload.hash"),
         "-F", f"file=@{path}", f"{daemon.http_url}/_upload"],
        reactor=reactor,
    )
    assert code == 0, err.decode()
    assert b"HTTP/1.1 100 Continue" in err
    job = await job_of(daemon, json.loads(out)["job_id"])
    assert job.result[0][2] == sha256(content)


@pytest_twisted.ensureDeferred
async def test_bad_login_with_expect_sends_no_body(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(os.urandom(8 * MiB))
    out, err, code = await getProcessOutputAndValue(
        "curl",
        ["-sS", "-H", "Expect: 100-continue", "--expect100-timeout", "30", "-u", "admin:wrong",
         "-F", data("upload.hash"), "-F", f"file=@{path}", "-w", "\n%{http_code} %{size_upload}",
         f"{daemon.http_url}/_upload"],
        reactor=reactor,
    )
    assert code == 0, err.decode()
    body, _, tail = out.decode().rpartition("\n")
    status, uploaded = tail.split()
    assert status == "401"
    assert json.loads(body) == {"error": "Invalid credentials"}
    assert int(float(uploaded)) == 0
    assert not [j for j in daemon.middleware.jobs if j.method == "upload.hash"]


@pytest_twisted.ensureDeferred
async def test_unix_socket_peer_is_trusted(daemon: RunningDaemon, tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"local")
    status, body = await curl(
        "--unix-socket", daemon.socket_path, "-F", data("upload.hash"), "-F", f"file=@{path}", "http://localhost/_upload"
    )
    assert status == 200, body
    job = await job_of(daemon, body["job_id"])
    assert job.credentials == {"type": "UNIX_SOCKET", "data": {"username": "root"}}


@pytest_twisted.ensureDeferred
async def test_connection_reused_after_upload(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"x" * 1000)
    url = f"{daemon.http_url}/_upload"
    one = ["-u", user_arg(), "-F", data("upload.hash"), "-F", f"file=@{path}", "-w", " %{num_connects}\n", url]
    out, err, code = await getProcessOutputAndValue("curl", ["-sS", *one, "--next", *one], reactor=reactor)
    assert code == 0, err.decode()
    first, second = out.decode().splitlines()
    assert first.endswith(" 1") and second.endswith(" 0"), out


@pytest_twisted.ensureDeferred
async def test_concurrent_uploads(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    contents = [os.urandom(4 * MiB + i) for i in range(4)]
    uploads = []
    for i, content in enumerate(contents):
        path = tmp_path / f"c{i}"
        path.write_bytes(content)
        method = "upload.hash" if i % 2 else "upload.hash_async"
        uploads.append(Deferred.fromCoroutine(curl("-u", user_arg(), "-F", data(method), "-F", f"file=@{path}", f"{daemon.http_url}/_upload")))
    for content, done in zip(contents, uploads):
        status, body = await done
        assert status == 200, body
        job = await job_of(daemon, body["job_id"])
        assert job.result[0][2:] == [sha256(content), len(content)]


@pytest_twisted.ensureDeferred
async def test_http_1_0(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    path = tmp_path / "x"
    content = os.urandom(2 * MiB)
    path.write_bytes(content)
    status, body = await curl("-0", "-u", user_arg(), "-F", data("upload.hash"), "-F", f"file=@{path}", f"{daemon.http_url}/_upload")
    assert status == 200, body
    job = await job_of(daemon, body["job_id"])
    assert job.result[0][2] == sha256(content)


# -- the treq helper ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_treq_helper(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    on_disk = tmp_path / "disk.bin"
    disk_content = os.urandom(5 * MiB + 1)
    on_disk.write_bytes(disk_content)
    memory_content = os.urandom(1000)
    with open(on_disk, "rb") as f:
        # The daemon answers 405 unless "data" comes first: treq writes the
        # plain fields before the files, and keeps the files in order.
        job_id = await upload(
            daemon.http_url,
            "upload.hash",
            ["tag"],
            [f, ("memory.txt", "text/plain", io.BytesIO(memory_content)), ("noname", io.BytesIO(b""))],
            auth=ADMIN,
            reactor=reactor,
        )
    job = await job_of(daemon, job_id)
    assert job.arguments == ["tag"]
    assert job.result == [
        ["disk.bin", "application/octet-stream", sha256(disk_content), len(disk_content)],
        ["memory.txt", "text/plain", sha256(memory_content), len(memory_content)],
        ["noname", "application/octet-stream", sha256(b""), 0],
    ]


@pytest_twisted.ensureDeferred
async def test_treq_helper_waits_for_the_job(daemon: RunningDaemon, admin: Any) -> None:
    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        assert await client.login(*ADMIN)
        content = os.urandom(MiB)
        result = await upload(
            daemon.http_url, "upload.hash", [], [("w.bin", io.BytesIO(content))], auth=ADMIN, reactor=reactor, wait=client
        )
        assert result == [["w.bin", "application/octet-stream", sha256(content), len(content)]]
        with pytest.raises(ClientCallError) as caught:
            await upload(
                daemon.http_url, "core.job_test", [{"sleep": 0.3, "error": "refused"}], [("x", io.BytesIO(b"x"))],
                auth=ADMIN, reactor=reactor, wait=client,
            )
        assert caught.value.reason.endswith("refused")
    finally:
        await client.close()


class Unseekable(io.RawIOBase):
    """
    A stream of unknown length: the helper sends it chunked.
    """

    def __init__(self, content: bytes) -> None:
        self._content = io.BytesIO(content)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._content.readinto(buffer)

    def seekable(self) -> bool:
        return False

    def seek(self, *args: Any) -> int:
        raise OSError("not seekable")

    def tell(self) -> int:
        raise OSError("not seekable")


@pytest_twisted.ensureDeferred
async def test_treq_helper_streams_unknown_length(daemon: RunningDaemon, admin: Any) -> None:
    content = os.urandom(3 * MiB)
    job_id = await upload(
        daemon.http_url + "/_upload", "upload.hash_async", [], [("s.bin", Unseekable(content))], auth=ADMIN, reactor=reactor
    )
    job = await job_of(daemon, job_id)
    assert job.result == [["s.bin", "application/octet-stream", sha256(content), len(content)]]


@pytest_twisted.ensureDeferred
async def test_treq_helper_errors(daemon: RunningDaemon, admin: Any) -> None:
    files = [("x", io.BytesIO(b"x"))]
    with pytest.raises(UploadError) as caught:
        await upload(daemon.http_url, "upload.hash", [], files, auth=("admin", "wrong"), reactor=reactor)
    assert (caught.value.status, caught.value.reason) == (401, "Invalid credentials")
    for credentials in ({"token": "nope"}, {"api_key": "nope"}):
        with pytest.raises(UploadError) as caught:
            await upload(daemon.http_url, "upload.hash", [], [("x", io.BytesIO(b"x"))], reactor=reactor, **credentials)
        assert caught.value.status == 401
    with pytest.raises(UploadError) as caught:
        await upload(daemon.http_url, "nope.nothing", [], [("x", io.BytesIO(b"x"))], auth=ADMIN, reactor=reactor)
    assert caught.value.status == 422
    assert "nope.nothing" in caught.value.reason
    with pytest.raises(ValueError):
        upload(daemon.http_url, "upload.hash", [], files, auth=ADMIN, token="t")


@pytest_twisted.ensureDeferred
async def test_treq_helper_refused_big_body(daemon: RunningDaemon, admin: Any) -> None:
    # The daemon answers before the body is sent; the helper still gets the answer.
    with pytest.raises(UploadError) as caught:
        await upload(daemon.http_url, "upload.no_input", [], [("x", io.BytesIO(os.urandom(20 * MiB)))], auth=ADMIN, reactor=reactor)
    assert caught.value.status == 412


# -- authentication -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "authorization, reason",
    [
        (None, "Authentication required"),
        (basic("admin", "wrong"), "Invalid credentials"),
        (basic("nobody", "x"), "Invalid credentials"),
        (basic("admin", ""), "Invalid credentials"),
        (b"Basic !!!notbase64", "Malformed Basic credentials: not base64"),
        (b"Basic " + b64encode(b"\xff\xfe:x"), "The Basic user and password is not UTF-8"),
        (b"Basic " + b64encode(b"admin-no-colon"), "Malformed Basic credentials: no ':' between user and password"),
        (b"Basic", "Empty Basic credentials"),
        (b"Digest abc", "Unsupported Authorization scheme: use Basic, Bearer or Token"),
        (b"Bearer some-api-key", "Invalid credentials"),
        (b"Token some-token", "Invalid credentials"),
    ],
)
async def test_401(daemon: RunningDaemon, admin: Any, authorization: bytes | None, reason: str) -> None:
    body = data_part("upload.hash") + part("file", b"content", "f") + END
    status, headers, payload = await raw_upload(daemon, body, authorization=authorization)
    assert status == 401
    assert payload == {"error": reason}
    assert headers[b"www-authenticate"].startswith(b"Basic")
    assert not [j for j in daemon.middleware.jobs if j.method == "upload.hash"]


@pytest_twisted.ensureDeferred
async def test_401_auth_token_argument(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"x")
    status, body = await curl("-F", data("upload.hash"), "-F", f"file=@{path}", f"{daemon.http_url}/_upload?auth_token=abc")
    assert (status, body) == (401, {"error": "Invalid credentials"})


def test_api_key_credentials() -> None:
    assert IAPIKey.providedBy(APIKeyCredentials("k")) and APIKeyCredentials("k").key == "k"
    assert "s3cr3t" not in repr(APIKeyCredentials("s3cr3t"))


@pytest_twisted.ensureDeferred
async def test_tokens(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    user = User(ADMIN[0], frozenset({"FULL_ADMIN"}), "LOGIN_PASSWORD")
    tokens = daemon.middleware.tokens
    path = tmp_path / "x"
    path.write_bytes(b"x")
    args = ["-F", data("upload.hash"), "-F", f"file=@{path}"]
    url = f"{daemon.http_url}/_upload"

    status, body = await curl("-H", f"Authorization: Token {await tokens.create(user, 60)}", *args, url)
    assert status == 200, body
    job = await job_of(daemon, body["job_id"])
    assert job.credentials == {"type": "TOKEN", "data": {"username": ADMIN[0]}}

    once = await tokens.create(user, 60, single_use=True)
    status, body = await curl(*args, f"{url}?auth_token={once}")
    assert status == 200, body
    assert await curl(*args, f"{url}?auth_token={once}") == (401, {"error": "Invalid credentials"})

    for_a_download = await tokens.create(user, 60, job_id=job.id)
    assert await curl("-H", f"Authorization: Token {for_a_download}", *args, url) == (401, {"error": "Invalid credentials"})
    elsewhere = await tokens.create(user, 60, match_origin="192.0.2.1")
    assert await curl(*args, f"{url}?auth_token={elsewhere}") == (401, {"error": "Invalid credentials"})


@pytest_twisted.ensureDeferred
async def test_bad_login_answers_before_the_body(daemon: RunningDaemon, admin: Any) -> None:
    # The headers promise 100 MB; only the headers are sent.  The answer comes
    # at once; what the client sends after it is dropped, and past a limit
    # the connection is closed.
    client = await raw_client(daemon)
    client.transport.write(request_head(100_000_000, authorization=basic("admin", "wrong")))
    status, headers, payload = await client.response()
    assert (status, json.loads(payload)) == (401, {"error": "Invalid credentials"})
    assert headers[b"connection"] == b"close"
    client.transport.write(b"x" * (LINGER_BYTES + 1))
    await client.closed


@pytest_twisted.ensureDeferred
async def test_refused_connection_closes_after_a_while(daemon: RunningDaemon, admin: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(body_module, "LINGER_SECONDS", 0.05)
    client = await raw_client(daemon)
    client.transport.write(request_head(100_000_000, authorization=None) + b"--" + BOUNDARY)
    status, _, payload = await client.response()
    assert (status, json.loads(payload)) == (401, {"error": "Authentication required"})
    await client.closed


# -- the status codes of the protocol ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_403_when_the_middleware_refuses(daemon: RunningDaemon, admin: Any, monkeypatch: Any) -> None:
    # Every logged-in user may call everything for now: stand in for the
    # roles check that call_from will make.
    call_from = daemon.middleware.call_from

    def refusing(app: Any, name: str, params: Any, **kwargs: Any) -> Any:
        if name == "upload.hash":
            raise CallError("Not allowed to call upload.hash", errno.EACCES)
        return call_from(app, name, params, **kwargs)

    monkeypatch.setattr(daemon.middleware, "call_from", refusing)
    body = data_part("upload.hash") + part("file", b"content", "f") + END
    status, _, payload = await raw_upload(daemon, body)
    assert (status, payload) == (403, {"error": "Not allowed to call upload.hash"})
    status, _, payload = await raw_upload(daemon, data_part("upload.hash_async") + part("file", b"c", "f") + END)
    assert status == 200


def _payload(status_headers_payload: tuple[int, Any, Any]) -> tuple[int, Any]:
    status, _, payload = status_headers_payload
    return status, payload


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "body, status, reason",
    [
        (part("data", b"{not json") + part("file", b"x", "f") + END, 400, "The data part is not valid JSON"),
        (part("data", b"\xff\xfe") + part("file", b"x", "f") + END, 400, "The data part is not valid JSON"),
        # Finding 17: deep nesting was a RecursionError, logged as critical and answered 500.
        (part("data", b"[" * 30_000 + b"]" * 30_000) + part("file", b"x", "f") + END, 400, "nested too deeply"),
        (part("data", b'{"a": ' * 9_000 + b"1" + b"}" * 9_000) + part("file", b"x", "f") + END, 400, "nested too deeply"),
        (END, 405, "No part found in the body"),
        (b"", 405, "No part found in the body"),
        (b"this is not multipart at all", 405, "No part found in the body"),
        (part("file", b"x", "f") + END, 405, 'The first part must be "data", not \'file\''),
        (data_part("upload.hash") + part("other", b"x") + END, 405, 'The second part must be "file", not \'other\''),
        (data_part("upload.hash") + END, 405, 'No "file" part after "data"'),
        (
            data_part("upload.hash") + part("file", b"x", "f") + part("data", b"x") + END,
            405,
            'Part 3 must be "file", not \'data\'',
        ),
        (part("data", b'{"params": []}') + part("file", b"x", "f") + END, 422, 'The data part has no "method"'),
        (part("data", b"[1, 2]") + part("file", b"x", "f") + END, 422, 'The data part has no "method"'),
        (part("data", b'{"method": 5}') + part("file", b"x", "f") + END, 422, 'The "method" of the data part must be a string'),
        (data_part("upload.missing") + part("file", b"x", "f") + END, 422, "Method 'upload.missing' does not exist"),
        (data_part("sample.secret") + part("file", b"x", "f") + END, 422, "Method 'sample.secret' does not exist"),
        (data_part("upload.plain") + part("file", b"x", "f") + END, 412, "Method 'upload.plain' is not a job: it takes no upload"),
        (data_part("upload.no_input") + part("file", b"x", "f") + END, 412, "Method 'upload.no_input' takes no input pipe"),
        (data_part("upload.count", "x") + part("file", b"x", "f") + END, 412, "n: Not a valid integer"),
        (data_part("upload.count", 1, 2) + part("file", b"x", "f") + END, 412, ""),
        (
            part("data", b'{"method": "upload.count", "params": 5}') + part("file", b"x", "f") + END,
            412,
            'The "params" of the data part must be an array',
        ),
        (
            data_part("upload.fail_early", "no thanks") + part("file", b"x", "f") + END,
            412,
            "(upload.fail_early) failed while uploading: [EINVAL] no thanks",
        ),
        (part("data", b" " * (MAX_DATA_SIZE + 1)) + part("file", b"x", "f") + END, 413, "The data part is larger than"),
    ],
)
async def test_refusals(daemon: RunningDaemon, admin: Any, body: bytes, status: int, reason: str) -> None:
    answer = await raw_upload(daemon, body)
    assert answer[0] == status, answer
    assert reason in answer[2]["error"]
    assert set(answer[2]) == {"error"}


@pytest_twisted.ensureDeferred
async def test_405_not_multipart(daemon: RunningDaemon, admin: Any) -> None:
    status, body = await curl("-u", user_arg(), "-H", "Content-Type: application/json", "--data-binary", "{}", f"{daemon.http_url}/_upload")
    assert (status, body) == (405, {"error": "No part found: the body must be multipart/form-data with a boundary"})


@pytest_twisted.ensureDeferred
async def test_405_garbage_is_refused_early(daemon: RunningDaemon, admin: Any) -> None:
    # 10 MB of garbage is refused after the first 64 KiB, not read to the end.
    client = await raw_client(daemon)
    client.transport.write(request_head(10 * MiB))
    for _ in range(4):
        client.transport.write(b"\x00garbage" * 4096)
    status, headers, payload = await client.response()
    assert status == 405
    assert json.loads(payload) == {"error": "No part found in the first 65536 bytes of the body"}
    assert headers[b"connection"] == b"close"
    client.transport.loseConnection()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_405_sixth_file_fails_the_job(daemon: RunningDaemon, admin: Any) -> None:
    files = b"".join(part("file", b"%d" % i * 1000, f"f{i}") for i in range(6))
    status, _, payload = await raw_upload(daemon, data_part("upload.hash") + files + END)
    assert (status, payload) == (405, {"error": "At most 5 files can be uploaded at once"})
    job = find_job(daemon, "upload.hash")
    await job.wait()
    assert job.state is JobState.FAILED
    assert job.error == "[ECONNABORTED] The upload failed (405): At most 5 files can be uploaded at once"


@pytest_twisted.ensureDeferred
async def test_412_job_failing_during_a_big_upload(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(os.urandom(20 * MiB))
    status, body = await curl("-u", user_arg(), "-F", data("upload.fail_early", "bad file"), "-F", f"file=@{path}", f"{daemon.http_url}/_upload")
    assert status == 412
    assert body["error"].endswith("(upload.fail_early) failed while uploading: [EINVAL] bad file")


@pytest_twisted.ensureDeferred
async def test_job_ending_early_gets_the_rest_dropped(daemon: RunningDaemon, admin: Any, tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(os.urandom(10 * MiB))
    status, body = await curl("-u", user_arg(), "-F", data("upload.ignore"), "-F", f"file=@{path}", "-F", f"file=@{path}", f"{daemon.http_url}/_upload")
    assert status == 200, body
    job = await job_of(daemon, body["job_id"])
    assert (job.state, job.result) == (JobState.SUCCESS, "ignored")


# -- broken uploads --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_body_ending_before_the_closing_boundary(daemon: RunningDaemon, admin: Any) -> None:
    body = data_part("upload.hash") + part("file", os.urandom(100_000), "cut.bin")[:-2000]
    status, _, payload = await raw_upload(daemon, body)
    assert (status, payload) == (400, {"error": "The body ended before the closing multipart boundary"})
    job = find_job(daemon, "upload.hash")
    await job.wait()
    assert job.state is JobState.FAILED
    assert "The body ended before the closing multipart boundary" in job.error
    assert job.exc_info["errno"] == errno.ECONNABORTED


@pytest_twisted.ensureDeferred
async def test_malformed_part_after_the_job_started(daemon: RunningDaemon, admin: Any) -> None:
    body = data_part("upload.hash") + part("file", b"fine", "f") + b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\nx\r\n" + END
    status, _, payload = await raw_upload(daemon, body)
    assert status == 400
    assert payload["error"].startswith("Malformed multipart body: ")
    job = find_job(daemon, "upload.hash")
    await job.wait()
    assert job.state is JobState.FAILED


@pytest_twisted.ensureDeferred
async def test_client_disconnecting_mid_part(daemon: RunningDaemon, admin: Any, gate: Any, tmp_path: Path) -> None:
    content = os.urandom(MiB)
    body = data_part("upload.gated", "gate") + part("file", content, "half.bin") + END
    client = await raw_client(daemon)
    client.transport.write(request_head(len(body)) + body[: len(body) // 2])
    pipe = await gate.started
    client.transport.abortConnection()
    await client.closed
    gate.allow(None)
    job = find_job(daemon, "upload.gated")
    await job.wait()
    assert job.state is JobState.FAILED
    assert job.error.startswith("[ECONNABORTED] The client disconnected before the upload ended (in file 1 'half.bin', ")
    assert pipe.failure is not None and pipe.failure.check(UploadInterrupted)
    # The daemon goes on serving.
    path = tmp_path / "after"
    path.write_bytes(b"after")
    status, body2 = await curl("-u", user_arg(), "-F", data("upload.hash"), "-F", f"file=@{path}", f"{daemon.http_url}/_upload")
    assert status == 200, body2


@pytest_twisted.ensureDeferred
async def test_client_disconnecting_between_files(daemon: RunningDaemon, admin: Any, gate: Any) -> None:
    body = data_part("upload.gated", "gate") + part("file", b"one", "1") + b"--" + BOUNDARY + b"\r\nContent-Disp"
    client = await raw_client(daemon)
    client.transport.write(request_head(len(body) + 1000) + body)
    await gate.started
    client.transport.abortConnection()
    await client.closed
    gate.allow(None)
    job = find_job(daemon, "upload.gated")
    await job.wait()
    assert job.state is JobState.FAILED
    assert "The client disconnected before the upload ended" in job.error


# -- flow control --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_flow_control_in_memory(daemon: RunningDaemon, admin: Any, gate: Any) -> None:
    """
    Byte by byte through an in-memory connection: the socket is paused when the
    pipe reaches its high water mark and resumed at the low one.
    """
    site = make_site(daemon.middleware)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    channel.makeConnection(transport)
    chunk_size = 16 * 1024
    content = os.urandom(4 * MiB)
    head = data_part("upload.gated", "gate") + part("file", b"", "flow.bin")[:-2]
    body = head + content + b"\r\n" + END
    channel.dataReceived(request_head(len(body)) + head)
    assert transport.producerState == "paused"  # logging in
    pipe = await gate.started
    await unwound()
    assert transport.producerState == "producing"
    most, pauses = 0, 0
    for offset in range(0, len(content), chunk_size):
        assert transport.producerState == "producing"
        channel.dataReceived(content[offset : offset + chunk_size])
        most = max(most, buffered(pipe))
        if buffered(pipe) >= pipe.high_water:
            assert transport.producerState == "paused"
            pauses += 1
            while transport.producerState == "paused":
                gate.allow(1)  # one 64 KiB read
                assert buffered(pipe) > pipe.low_water or transport.producerState == "producing"
        else:
            assert transport.producerState == "producing"
    # A write goes past high water by less than one chunk (and the few bytes
    # the parser held back in case they began a boundary).
    assert most < pipe.high_water + chunk_size + len(b"\r\n--" + BOUNDARY)
    assert pauses > 10
    channel.dataReceived(b"\r\n" + END)
    gate.allow(None)
    job = find_job(daemon, "upload.gated")
    await job.wait()
    assert job.result == [["flow.bin", None, sha256(content), len(content)]]
    assert b"HTTP/1.1 200 OK" in transport.value()
    assert json.loads(transport.value().split(b"\r\n\r\n", 1)[1]) == {"job_id": job.id}
    channel.connectionLost(Failure(ConnectionDone()))


@pytest_twisted.ensureDeferred
async def test_slow_job_bounds_memory(daemon: RunningDaemon, admin: Any, gate: Any, tmp_path: Path) -> None:
    """
    Over a real socket: a job that does not read holds the upload back; the
    daemon's memory does not grow with the file.
    """
    content = os.urandom(64 * MiB)
    path = tmp_path / "slow.bin"
    path.write_bytes(content)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        done = Deferred.fromCoroutine(curl("-u", user_arg(), "-F", data("upload.gated", "gate"), "-F", f"file=@{path}", f"{daemon.http_url}/_upload"))
        pipe = await gate.started
        producer = pipe.producer  # the connection, as the pipe's producer
        paused: Deferred[int] = Deferred()
        pause = producer.pauseProducing

        def pause_and_tell() -> None:
            pause()
            if not paused.called:
                paused.callback(buffered(pipe))

        producer.pauseProducing = pause_and_tell
        level = await paused
        # The socket pauses at high water; one read may be under way then.
        assert pipe.high_water <= level < pipe.high_water + READ_SIZE
        gate.allow(None)
        status, body = await done
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert status == 200, body
    job = await job_of(daemon, body["job_id"])
    assert job.result == [["slow.bin", "application/octet-stream", sha256(content), len(content)]]
    # A 64 MiB body through at most the pipe's buffer and a read or two.
    assert peak < 2 * READ_SIZE + 2 * MiB, peak
