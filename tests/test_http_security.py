"""
The security headers of every HTTP answer, and the C{Origin} check of the
WebSocket handshake, against a real daemon (over TCP and over TLS).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, AsyncIterator

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure

from midjobs.config import ConfigError, Settings
from midjobs.security_headers import CONTENT_SECURITY_POLICY
from midjobs.origins import Origin, OriginPolicy

from conftest import ADMIN, RunningDaemon
from test_tls import Pki, make_pki

#: Besides the daemon's own origin, pages from here may open the WebSocket.
ALLOWED = "https://UI.example.com:443/"

#: What every answer carries, over TLS or not.
EVERYWHERE = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": CONTENT_SECURITY_POLICY.decode(),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def settings(settings: Settings, pki: Pki) -> Settings:
    """
    The test daemon listens without TLS first, with TLS second, and allows
    the L{ALLOWED} origin.
    """
    return attrs.evolve(
        settings.updated_from({"http": {"allowed_origins": [ALLOWED]}}),
        listen=("tcp:0:interface=127.0.0.1", "ssl:0:interface=127.0.0.1"),
        tls_certificate=str(pki.certificate),
        tls_private_key=str(pki.private_key),
    )


def tls_port(daemon: RunningDaemon) -> int:
    return daemon.daemon.listeners[1].port.getHost().port


@pytest_twisted.async_yield_fixture
async def admin(daemon: RunningDaemon) -> AsyncIterator[tuple[str, str]]:
    await daemon.middleware.users.create({"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
    yield ADMIN


async def curl_head(*args: str) -> tuple[int, dict[str, str], str]:
    """
    Run curl; return the status, the headers (names in lower case) and the body.
    """
    out, err, code = await getProcessOutputAndValue("curl", ["-sS", "-D", "-", *args], reactor=reactor)
    assert code == 0, err.decode()
    head, _, body = out.decode("latin-1").partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_security_headers(headers: dict[str, str], *, tls: bool, api: bool) -> None:
    for name, value in EVERYWHERE.items():
        assert headers.get(name) == value, (name, headers)
    assert headers.get("strict-transport-security") == ("max-age=31536000" if tls else None)
    if api:
        assert headers.get("cache-control") == "no-store"


# -- the headers ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_headers_on_404(daemon: RunningDaemon, pki: Pki) -> None:
    status, headers, _ = await curl_head(f"{daemon.http_url}/no/such/page")
    assert status == 404
    assert_security_headers(headers, tls=False, api=False)
    assert "cache-control" not in headers
    status, headers, _ = await curl_head("--cacert", str(pki.ca), f"https://127.0.0.1:{tls_port(daemon)}/no/such/page")
    assert status == 404
    assert_security_headers(headers, tls=True, api=False)


@pytest_twisted.ensureDeferred
async def test_headers_on_upload_answers(daemon: RunningDaemon, admin: Any, tmp_path: Path, pki: Pki) -> None:
    source = tmp_path / "up.txt"
    source.write_bytes(b"x" * 1000)
    data = json.dumps({"method": "filesystem.put", "params": [str(daemon.state_dir / "files" / "up.txt")]})
    form = ["-F", f"data={data}", "-F", f"file=@{source}"]
    # 401: no credentials.
    status, headers, body = await curl_head(*form, f"{daemon.http_url}/_upload")
    assert status == 401 and "error" in json.loads(body)
    assert_security_headers(headers, tls=False, api=True)
    # 200: the job's id.
    status, headers, body = await curl_head("-u", f"{ADMIN[0]}:{ADMIN[1]}", *form, f"{daemon.http_url}/_upload")
    assert status == 200 and "job_id" in json.loads(body)
    assert_security_headers(headers, tls=False, api=True)
    # The same over TLS, with HSTS.
    https = f"https://127.0.0.1:{tls_port(daemon)}/_upload"
    status, headers, body = await curl_head("--cacert", str(pki.ca), *form, https)
    assert status == 401
    assert_security_headers(headers, tls=True, api=True)
    status, headers, body = await curl_head("--cacert", str(pki.ca), "-u", f"{ADMIN[0]}:{ADMIN[1]}", *form, https)
    assert status == 200
    assert_security_headers(headers, tls=True, api=True)


@pytest_twisted.ensureDeferred
async def test_headers_on_downloads(daemon: RunningDaemon, admin_client: Any) -> None:
    (daemon.state_dir / "files" / "down.bin").write_bytes(os.urandom(1000))
    job_id, path = await admin_client.call(
        "core.download", "filesystem.get", [str(daemon.state_dir / "files" / "down.bin")], "down.bin"
    )
    status, headers, _ = await curl_head(f"{daemon.http_url}/_download/{job_id}?auth_token=wrong")
    assert status == 401
    assert_security_headers(headers, tls=False, api=True)
    status, headers, _ = await curl_head(f"{daemon.http_url}{path}")
    assert status == 200 and headers["content-disposition"] == 'attachment; filename="down.bin"'
    assert_security_headers(headers, tls=False, api=True)


@pytest_twisted.ensureDeferred
async def test_headers_on_refused_websocket(daemon: RunningDaemon) -> None:
    # A GET without Upgrade gets no status page, but an error with the headers.
    status, headers, _ = await curl_head(f"{daemon.http_url}/api/current")
    assert status == 426
    assert_security_headers(headers, tls=False, api=True)
    status, headers = await handshake(daemon.port, origin="http://elsewhere.example")
    assert status == 403
    assert_security_headers(headers, tls=False, api=True)
    status, headers = await handshake(tls_port(daemon), origin="http://elsewhere.example", tls=True)
    assert status == 403
    assert_security_headers(headers, tls=True, api=True)


# -- the Origin check ------------------------------------------------------------


class _Handshake(Protocol):
    """
    Sends a WebSocket opening handshake and reads the head of the answer.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buffer = b""
        self.head: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and not self.head.called:
            self.head.callback(self.buffer.partition(b"\r\n\r\n")[0])
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if not self.head.called:
            self.head.errback(reason)


async def handshake(
    port: int, *, origin: str | None, host: str | None = None, tls: bool = False
) -> tuple[int, dict[str, str]]:
    """
    Open a WebSocket to C{/api/current} on C{port} with C{origin}; return the
    status and headers of the answer.
    """
    lines = [
        "GET /api/current HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    protocol = _Handshake(("\r\n".join(lines) + "\r\n\r\n").encode())
    endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if tls:
        endpoint = wrapClientTLS(CertificateOptions(verify=False), endpoint)
    await connectProtocol(endpoint, protocol)
    head = (await protocol.head.addTimeout(10, reactor)).decode()
    status_line, *header_lines = head.split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in header_lines)}
    return int(status_line.split()[1]), headers



@pytest_twisted.ensureDeferred
async def test_origin_check(daemon: RunningDaemon, log_events: list[dict[str, Any]]) -> None:
    port, secure_port = daemon.port, tls_port(daemon)
    # Scripts and midclt send no Origin.
    assert (await handshake(port, origin=None))[0] == 101
    assert (await handshake(secure_port, origin=None, tls=True))[0] == 101
    # A page the daemon served itself: the same scheme, host and port.
    assert (await handshake(port, origin=f"http://127.0.0.1:{port}"))[0] == 101
    assert (await handshake(secure_port, origin=f"https://127.0.0.1:{secure_port}", tls=True))[0] == 101
    assert (await handshake(port, origin=f"http://LOCALHOST:{port}", host=f"localhost:{port}"))[0] == 101
    # The allowed origin, however it is written.
    assert (await handshake(port, origin="https://ui.example.com"))[0] == 101
    assert (await handshake(secure_port, origin="https://ui.example.com:443", tls=True))[0] == 101
    # Anything else.
    for origin, host, tls in [
        ("http://elsewhere.example", None, False),
        (f"http://localhost:{port}", None, False),  # another host name
        (f"https://127.0.0.1:{port}", None, False),  # another scheme
        (f"http://127.0.0.1:{secure_port}", None, True),
        (f"http://127.0.0.1:{port + 1}", None, False),  # another port
        ("http://ui.example.com", None, False),
        ("null", None, False),
        ("file:///home/user/page.html", None, False),
    ]:
        status, _ = await handshake(secure_port if tls else port, origin=origin, host=host, tls=tls)
        assert status == 403, origin
    refusals = [e for e in log_events if "Refused a WebSocket" in e.get("log_format", "")]
    assert refusals[0]["origin"] == "http://elsewhere.example" and refusals[0]["host"] == f"127.0.0.1:{port}"
    assert len(refusals) == 8


@pytest_twisted.ensureDeferred
async def test_client_connects_with_no_origin(daemon: RunningDaemon, admin_client: Any) -> None:
    assert await admin_client.call("core.ping") == "pong"


# -- the policy and its configuration ---------------------------------------------------


def test_origin_parsing() -> None:
    assert Origin.parse("HTTPS://Example.COM:443") == Origin("https", "example.com", 443)
    assert Origin.parse("http://[::1]:6000/") == Origin("http", "::1", 6000)
    assert str(Origin.parse("https://example.com:443")) == "https://example.com"
    assert str(Origin.parse("http://[::1]:6000")) == "http://[::1]:6000"
    assert Origin.of_host("[::1]:6000", secure=False) == Origin("http", "::1", 6000)
    assert Origin.of_host("example.com", secure=True) == Origin("https", "example.com", 443)
    for bad in ["null", "ftp://example.com", "https://", "https://example.com/page", "https://u@example.com",
                "https://example.com:99999", "https://example.com?x=1", "example.com"]:
        with pytest.raises(ValueError):
            Origin.parse(bad)


def test_origin_policy() -> None:
    policy = OriginPolicy.from_strings(["https://ui.example.com"])
    assert policy.allows(None, None, secure=False)
    assert policy.allows("http://host:6000", "host:6000", secure=False)
    assert policy.allows("https://host", "host:443", secure=True)
    assert not policy.allows("https://host", "host:443", secure=False)
    assert not policy.allows("http://host:6000", None, secure=False)
    assert not policy.allows("http://host:6000", "host:bad", secure=False)
    assert policy.allows("https://ui.example.com", None, secure=False)
    assert not policy.allows("https://ui.example.com.evil", "host", secure=False)
    assert not policy.allows("null", "host", secure=False)


def test_allowed_origins_configuration(tmp_path: Path) -> None:
    config = tmp_path / "midjobs.toml"
    config.write_text('[http]\nallowed_origins = ["https://UI.example.com:443", "http://10.0.0.1:8080"]\n')
    assert Settings.from_toml(config).allowed_origins == ("https://ui.example.com", "http://10.0.0.1:8080")
    config.write_text('[http]\nallowed_origins = ["https://ui.example.com/app"]\n')
    with pytest.raises(ConfigError, match="http.allowed_origins: 'https://ui.example.com/app' is not an origin"):
        Settings.from_toml(config)
    config.write_text('[http]\nallowed_origins = "https://ui.example.com"\n')
    with pytest.raises(ConfigError, match="http.allowed_origins must be a list of strings"):
        Settings.from_toml(config)


# -- the access log -------------------------------------------------------------


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)

    def close(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_access_log_hides_tokens(daemon: RunningDaemon, admin_client: Any) -> None:
    import treq

    site = daemon.daemon.site
    log = _Lines()
    site._logFile = log
    job_id, url = await admin_client.call("core.download", "system.debug", [], "debug.txz")
    token = url.rsplit("=", 1)[1]
    response = await treq.get(daemon.http_url + url, reactor=reactor)
    await response.content()
    assert response.code == 200
    [line] = [line for line in log.lines if f"/_download/{job_id}" in line]
    assert token not in line
    assert f"/_download/{job_id}?auth_token=<hidden> HTTP/1.1" in line


@pytest_twisted.ensureDeferred
async def test_access_log_hides_a_token_however_its_name_is_spelled(
    daemon: RunningDaemon, admin_client: Any, tmp_path: Path
) -> None:
    # Finding 16: ?auth%5Ftoken= logs in (parse_qs decodes the name), so the
    # log must hide its value too.
    log = _Lines()
    daemon.daemon.site._logFile = log
    token = await admin_client.call("auth.generate_token", 300)
    upload = tmp_path / "x"
    upload.write_bytes(b"x")
    data = json.dumps({"method": "filesystem.put", "params": ["/nowhere/x", {}]})
    status, _, _ = await curl_head(
        "-F", f"data={data}", "-F", f"file=@{upload}", f"{daemon.http_url}/_upload?auth%5Ftoken={token}"
    )
    assert status != 401
    await curl_head(f"{daemon.http_url}/_download/1?AUTH_TOKEN={token}&%61pi_key={token}")
    lines = [line for line in log.lines if "/_upload" in line or "/_download" in line]
    assert len(lines) == 2
    assert all(token not in line for line in lines), lines
    assert "/_upload?auth%5Ftoken=<hidden> HTTP/1.1" in lines[0]


def test_redact_query() -> None:
    from midjobs.http._access_log import redact_query

    assert redact_query(b"/a?x=1&auth_token=s&y=2") == b"/a?x=1&auth_token=<hidden>&y=2"
    assert redact_query(b"/a?auth%5ftoken=s") == b"/a?auth%5ftoken=<hidden>"
    assert redact_query(b"/a?Auth_Token=s#x&b=1") == b"/a?Auth_Token=<hidden>&b=1"
    assert redact_query(b"/a?password=s&api_key=t") == b"/a?password=<hidden>&api_key=<hidden>"
    assert redact_query(b"/a?page=2") == b"/a?page=2"


# -- request bodies on routes that take none (finding 8) ----------------------------


class _Raw(Protocol):
    """
    Sends C{request}; collects what comes back until the connection closes.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.closed.callback(self.received)


async def raw_exchange(port: int, request: bytes, timeout: float = 5) -> tuple[_Raw, bytes]:
    protocol = _Raw(request)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    return protocol, await protocol.closed.addTimeout(timeout, reactor)


@pytest.fixture
def no_spooling(monkeypatch: Any) -> list[Any]:
    """
    Records every temporary file twisted.web makes for a request body.
    """
    import tempfile

    import twisted.web.http

    made: list[Any] = []

    def temporary_file(*args: Any, **kwargs: Any) -> Any:
        made.append(args)
        return tempfile.TemporaryFile(*args, **kwargs)

    monkeypatch.setattr(twisted.web.http.tempfile, "TemporaryFile", temporary_file)
    return made


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 314572800\r\n\r\n",
        b"PUT /api/current HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n",
        b"GET /static/app.js HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /_download/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\nExpect: 100-continue\r\n\r\n",
        b"POST /_upload/x HTTP/1.0\r\nHost: x\r\nContent-Length: 200000\r\n\r\n",
    ],
)
@pytest_twisted.ensureDeferred
async def test_body_to_a_route_that_takes_none_is_refused_unread(
    daemon: RunningDaemon, no_spooling: list[Any], log_events: list[dict[str, Any]], head: bytes
) -> None:
    # Only the headers and a first piece of the body are sent: the 413 comes
    # at once, nothing is spooled, and the connection closes.
    protocol, received = await raw_exchange(daemon.port, head + b"x" * 1000)
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.split(b" ")[1] == b"413", received
    assert b"connection: close" in rest.lower()
    assert rest.endswith(b'{"error": "This route takes no request body"}')
    assert no_spooling == []
    [line] = [e for e in log_events if "the route takes no body" in e.get("log_format", "")]
    assert line["address"] == "127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_refused_body_connection_closes_when_the_body_ends(daemon: RunningDaemon) -> None:
    body = b"x" * 5000
    _, received = await raw_exchange(
        daemon.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    assert received.startswith(b"HTTP/1.1 413 ")


@pytest_twisted.ensureDeferred
async def test_requests_without_a_body_still_work(daemon: RunningDaemon, admin_client: Any) -> None:
    # A POST with an empty body is no body; the WebSocket handshake is a GET.
    status, _, _ = await curl_head("-X", "POST", "-H", "Content-Length: 0", f"{daemon.http_url}/")
    assert status == 405
    assert await admin_client.call("core.ping") == "pong"
