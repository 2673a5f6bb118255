"""
A download fetched through another node: two daemons in this process on
real sockets, A running the jobs, B relaying C{/_download} from A
(L{midjobs.http._relay}).  They share one token store, as the nodes of a
cluster share theirs in the database, and one relay secret.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any, AsyncIterator

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers

from conftest import SAMPLE_SERVICES, RunningDaemon
from download_services import pattern_sha256
from midjobs.auth import ITokenCredentials, ITokenStore
from midjobs.auth.pg_tokens import PgTokenStore
from midjobs.client import Client, connect
from midjobs.config import Settings
from midjobs.daemon import Daemon
from midjobs.store.pg import PgDatabase
from midjobs.store.pg_schema import PARTS, migrate_part
from midjobs.transfers import RELAY_HEADER, RELAY_VALIDITY, DownloadRelay
from test_tokens_store import database  # noqa: F401  # the fixture
from test_download import PausingBody, RawGet, ended, fetch, job_of, pipe_level, start_download, timeout, token_of

MiB = 1024 * 1024
SECRET = b"the cluster's relay secret"

pytest_plugins = ["postgres_server"]


@attrs.frozen
class Nodes:
    """
    A runs the jobs (its clients are C{a_client}); B relays their downloads.
    """

    a: RunningDaemon
    b: RunningDaemon
    a_client: Client


async def start_node(tmp_path: Path, short_tmp: Path, name: str) -> RunningDaemon:
    settings = Settings(
        listen=("tcp:0:interface=127.0.0.1",),
        state_dir=str(tmp_path / name),
        socket=str(short_tmp / f"{name}.sock"),
        plugins=(SAMPLE_SERVICES, "download_services"),
    )
    service = Daemon(settings, reactor)
    service.startService()
    await service.ready
    port = service.listeners[0].port.getHost().port
    return RunningDaemon(service, Path(settings.state_dir), settings.socket_path, port)


def share_tokens(source: RunningDaemon, target: RunningDaemon) -> None:
    """
    Make C{target} use the token store of C{source}, as nodes share theirs.
    """
    tokens = source.middleware.tokens
    target.middleware.tokens = tokens
    target.middleware.portal.checkers[ITokenCredentials].store = tokens


@pytest_twisted.async_yield_fixture
async def nodes(tmp_path: Path, short_tmp: Path) -> AsyncIterator[Nodes]:
    started: list[RunningDaemon] = []
    try:
        a = await start_node(tmp_path, short_tmp, "a")
        started.append(a)
        b = await start_node(tmp_path, short_tmp, "b")
        started.append(b)
        share_tokens(a, b)
        a.middleware.download_relay = DownloadRelay(reactor, "a", SECRET, lambda job_id: succeed(None))
        b.middleware.download_relay = DownloadRelay(reactor, "b", SECRET, lambda job_id: succeed(a.http_url))
        # The trusted local peer of A: its token is good on B without a user store.
        client = await connect(a.unix_url, reactor=reactor)
        yield Nodes(a, b, client)
        await client.close()
    finally:
        for node in started:
            await node.daemon.stopService()


async def curl(*args: str) -> tuple[int, bytes]:
    """
    Run curl: exit code, stderr.
    """
    out, err, code = await timeout(getProcessOutputAndValue("curl", ["-sS", *args], env=dict(os.environ)))
    return code, err


def rss() -> int:
    """
    This process's resident memory, in bytes.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def get(url: str, headers: dict[bytes, list[bytes]] | None = None) -> tuple[int, bytes]:
    """
    GET C{url}: status and body.
    """
    import treq

    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        response = await treq.get(url, headers=Headers(headers or {}), pool=pool)
        return response.code, await treq.content(response)
    finally:
        await pool.closeCachedConnections()


# The download through the other node.


@pytest_twisted.ensureDeferred
async def test_download_through_another_node(nodes: Nodes, tmp_path: Path) -> None:
    size = 64 * MiB + 7
    job_id, path = await start_download(nodes.a_client, "dl.thread_write", [size], "big.bin")
    assert nodes.b.middleware.downloads.get(job_id) is None
    target = tmp_path / "out"
    target.mkdir()
    code, err = await curl("-f", "-OJ", "--output-dir", str(target), nodes.b.http_url + path)
    assert code == 0, err
    assert os.listdir(target) == ["big.bin"]
    digest = hashlib.sha256()
    with open(target / "big.bin", "rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    assert digest.hexdigest() == pattern_sha256(size)
    job = await ended(nodes.a, job_id)
    assert job.state.value == "SUCCESS" and job.result == size
    # Used once: refused on a second use through either node.
    assert (await fetch(nodes.b, path))[0] == 401
    assert (await fetch(nodes.a, path))[0] == 401


def use_tokens(node: RunningDaemon, tokens: ITokenStore) -> None:
    """
    Make C{node} keep its tokens in C{tokens}.
    """
    tokens.counts = node.middleware.metrics
    node.middleware.tokens = tokens
    node.middleware.portal.checkers[ITokenCredentials].store = tokens


@pytest_twisted.ensureDeferred
async def test_tokens_in_the_database_each_node_its_own_store(nodes: Nodes, database: PgDatabase) -> None:
    # As the nodes of a cluster: one database, a store on each node.
    use_tokens(nodes.a, PgTokenStore(database, reactor))
    use_tokens(nodes.b, PgTokenStore(database, reactor))
    job_id, path = await start_download(nodes.a_client, "dl.thread_write", [3 * MiB])
    assert len(await database.runQuery("SELECT digest FROM tokens WHERE job_id = ?", (job_id,))) == 1
    code, _, body = await fetch(nodes.b, path)
    assert code == 200 and hashlib.sha256(body).hexdigest() == pattern_sha256(3 * MiB)
    assert await database.runQuery("SELECT digest FROM tokens") == []
    assert (await fetch(nodes.b, path))[0] == 401
    assert (await fetch(nodes.a, path))[0] == 401


@pytest_twisted.ensureDeferred
async def test_tokens_database_away_is_503(nodes: Nodes, postgres_server: Any, postgres_database: str) -> None:
    db = PgDatabase(postgres_database, reactor, size=2, timeout=1.0)
    await db.open()
    try:
        for part in PARTS:
            await db.runInteraction(migrate_part, part)
        use_tokens(nodes.a, PgTokenStore(db, reactor))
        use_tokens(nodes.b, PgTokenStore(db, reactor))
        job_id, path = await start_download(nodes.a_client, "dl.thread_write", [1000])
        await deferToThread(postgres_server.stop)
        try:
            code, _, body = await fetch(nodes.b, path)
        finally:
            await deferToThread(postgres_server.start)
        assert code == 503 and b"token database is unavailable" in body
        # Nothing was used: once the database is back, the URL works.
        deadline = reactor.seconds() + 30
        while (code := (await fetch(nodes.b, path))[0]) == 503:
            assert reactor.seconds() < deadline, "the database never came back"
            await deferLater(reactor, 0.1, lambda: None)
        assert code == 200
    finally:
        await db.close()


@pytest_twisted.ensureDeferred
async def test_token_used_on_the_owner_is_refused_through_the_other(nodes: Nodes) -> None:
    job_id, path = await start_download(nodes.a_client, "dl.thread_write", [10_000])
    code, _, body = await fetch(nodes.a, path)
    assert code == 200 and len(body) == 10_000
    assert (await fetch(nodes.b, path))[0] == 401


@pytest_twisted.ensureDeferred
async def test_headers_are_copied(nodes: Nodes) -> None:
    job_id, path = await start_download(nodes.a_client, "dl.thread_write", [1000], "résumé.txt")
    code, headers, body = await fetch(nodes.b, path)
    assert code == 200 and len(body) == 1000
    assert headers.getRawHeaders(b"content-type") == [b"application/octet-stream"]
    assert headers.getRawHeaders(b"content-disposition") == [
        b"attachment; filename=\"resume.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"
    ]
    assert headers.getRawHeaders(b"cache-control") == [b"no-store"]


@pytest_twisted.ensureDeferred
async def test_bad_tokens_and_missing_downloads_through_the_other_node(nodes: Nodes) -> None:
    job_id, path = await start_download(nodes.a_client, "dl.thread_write", [1000])
    assert (await fetch(nodes.b, f"/_download/{job_id}?auth_token=forged"))[0] == 401
    # A token for another job: refused by B, before A is asked, and not used up.
    assert (await fetch(nodes.b, f"/_download/{job_id + 100}?auth_token={token_of(path)}"))[0] == 401
    # A good token for a job A has no download of: A's 404 comes through.
    tokens = nodes.a.middleware.tokens
    user = (await tokens.lookup(token_of(path))).user
    stray = await tokens.create(user, 60, single_use=True, job_id=job_id + 100)
    code, _, body = await fetch(nodes.b, f"/_download/{job_id + 100}?auth_token={stray}")
    assert code == 404 and b"has no download" in body
    assert (await fetch(nodes.b, path))[0] == 200


# Flow control both ways.


@pytest_twisted.ensureDeferred
async def test_slow_reader_through_the_other_node_pauses_the_job(nodes: Nodes) -> None:
    size = 64 * MiB
    job_id, path = await start_download(nodes.a_client, "dl.thread_write", [size])
    job = job_of(nodes.a, job_id)
    pipe = job.pipes.output
    before = rss()
    peak = [before]

    class Measuring(PausingBody):
        def dataReceived(self, data: bytes) -> None:
            super().dataReceived(data)
            if self.received % (4 * MiB) < len(data):
                peak.append(rss())

    body = Measuring(pause_at=MiB)
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = await Agent(reactor, pool=pool).request(b"GET", (nodes.b.http_url + path).encode())
    assert response.code == 200
    response.deliverBody(body)
    await timeout(body.paused)

    # B's client stops reading: B stops reading from A, A's socket fills, A's
    # pipe pauses, and the job's writes wait.
    async def held() -> bool:
        if not pipe.delivery_paused:
            return False
        written = job.progress["extra"]
        await deferLater(reactor, 0.2, lambda: None)
        return pipe.delivery_paused and job.progress["extra"] == written

    deadline = reactor.seconds() + 30
    while not await held():
        assert reactor.seconds() < deadline, "the job's writes never waited"
        await deferLater(reactor, 0.01, lambda: None)
    assert job.state.value == "RUNNING" and pipe_level(pipe) <= pipe.high_water
    # What the job wrote beyond what the client read is in the buffers on
    # the way: A's pipe, and the sockets' and transports' buffers of two hops.
    assert job.progress["extra"] - body.received <= pipe.high_water + 24 * MiB
    peak.append(rss())

    body.transport.resumeProducing()
    await timeout(body.done)
    peak.append(rss())
    assert body.reason.check(ResponseDone)
    assert body.received == size and body.sha.hexdigest() == pattern_sha256(size)
    assert (await ended(nodes.a, job_id)).state.value == "SUCCESS"
    # Nothing piles up in this process (A and B): 64 MiB went through.
    assert max(peak) - before < 8 * MiB, [p - before for p in peak]


@pytest_twisted.ensureDeferred
async def test_client_leaving_the_other_node_fails_the_job(nodes: Nodes) -> None:
    job_id, path = await start_download(nodes.a_client, "dl.thread_write", [512 * MiB])
    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", nodes.b.port), RawGet(path, 2 * MiB))
    await timeout(client.aborted)
    assert client.data.startswith(b"HTTP/1.1 200 OK\r\n")
    job = await ended(nodes.a, job_id)
    assert job.state.value == "FAILED"
    assert job.error == "The reading side of the pipe went away"
    assert job.progress["extra"] < 512 * MiB


# Broken transfers.


@pytest_twisted.ensureDeferred
async def test_job_failing_mid_stream_cuts_the_relayed_response(nodes: Nodes, tmp_path: Path) -> None:
    job_id, path = await start_download(nodes.a_client, "dl.fail_after", [4 * MiB, "disk on fire"])
    target = tmp_path / "partial.bin"
    code, err = await curl("-o", str(target), nodes.b.http_url + path)
    # The connection is cut (reset: 56, or closed before the chunked body's end: 18).
    assert code in (18, 56), err
    assert target.stat().st_size < 4 * MiB + 1
    job = await ended(nodes.a, job_id)
    assert job.state.value == "FAILED" and "disk on fire" in job.error


@pytest_twisted.ensureDeferred
async def test_job_failed_before_the_relay_answers_its_error(nodes: Nodes) -> None:
    job_id, path = await start_download(nodes.a_client, "dl.fail_after", [10, "nothing to give"])
    assert (await ended(nodes.a, job_id)).state.value == "FAILED"
    code, headers, body = await fetch(nodes.b, path)
    assert code == 500 and b"nothing to give" in body


@pytest_twisted.ensureDeferred
async def test_owner_out_of_reach_is_502(nodes: Nodes) -> None:
    job_id, path = await start_download(nodes.a_client, "dl.thread_write", [1000])
    # The owner at a port nothing listens on.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nowhere = "http://127.0.0.1:%d" % unused.getsockname()[1]
    nodes.b.middleware.download_relay.locate = lambda job_id: succeed(nowhere)
    code, _, body = await fetch(nodes.b, path)
    assert code == 502 and b"cannot be reached" in body


@pytest_twisted.ensureDeferred
async def test_owner_refusing_the_relay_is_502(nodes: Nodes) -> None:
    job_id, path = await start_download(nodes.a_client, "dl.thread_write", [1000])
    # B does not share A's secret.
    nodes.b.middleware.download_relay = DownloadRelay(
        reactor, "b", b"not the cluster's secret", lambda job_id: succeed(nodes.a.http_url)
    )
    code, _, body = await fetch(nodes.b, path)
    assert code == 502 and b"refused to relay it" in body
    # A's download is still there for a genuine relay.
    assert nodes.a.middleware.downloads.get(job_id) is not None


@pytest_twisted.ensureDeferred
async def test_owner_unknown_for_now_is_503(nodes: Nodes) -> None:
    job_id, path = await start_download(nodes.a_client, "dl.thread_write", [1000])
    nodes.b.middleware.download_relay.locate = lambda job_id: fail(ConnectionRefusedError("the database is away"))
    code, _, body = await fetch(nodes.b, path)
    assert code == 503 and b"Cannot tell which node runs job" in body
    # The token was not used: it works once the owner is known again.
    nodes.b.middleware.download_relay.locate = lambda job_id: succeed(nodes.a.http_url)
    assert (await fetch(nodes.b, path))[0] == 200


# The relay credential.


@pytest_twisted.ensureDeferred
async def test_internal_download_refuses_bad_credentials(nodes: Nodes) -> None:
    job_id, path = await start_download(nodes.a_client, "dl.thread_write", [1000])
    url = f"{nodes.a.http_url}/_internal/download/{job_id}"
    b_relay = nodes.b.middleware.download_relay
    good = b_relay.credential(job_id)
    stranger = DownloadRelay(reactor, "b", b"another secret", b_relay.locate).credential(job_id)
    clock = Clock()
    clock.advance(reactor.seconds() - RELAY_VALIDITY - 2)
    expired = DownloadRelay(clock, "b", SECRET, b_relay.locate).credential(job_id)
    node, expires, mac = good.rsplit(".", 2)
    for refused in (
        [],
        [b""],
        [b"garbage"],
        [stranger.encode()],
        [expired.encode()],
        [b_relay.credential(job_id + 1).encode()],
        [f"c.{expires}.{mac}".encode()],
        [f"{node}.{int(expires) + 1}.{mac}".encode()],
        [good.encode(), good.encode()],
    ):
        code, body = await get(url, {RELAY_HEADER: refused} if refused else None)
        assert code == 403, refused
    assert (await get(f"{nodes.a.http_url}/_internal/other", {RELAY_HEADER: [good.encode()]}))[0] == 403
    # The genuine one works, once: the download was claimed.
    code, body = await get(url, {RELAY_HEADER: [good.encode()]})
    assert code == 200 and len(body) == 1000
    assert (await get(url, {RELAY_HEADER: [good.encode()]}))[0] == 404


def test_relay_credential_validity() -> None:
    clock = Clock()
    clock.advance(1_000_000)
    relay = DownloadRelay(clock, "node.example.org", SECRET, lambda job_id: succeed(None))
    credential = relay.credential(7)
    assert relay.verify(credential, 7) == "node.example.org"
    assert relay.verify(credential, 8) is None
    clock.advance(RELAY_VALIDITY)
    assert relay.verify(credential, 7) == "node.example.org"
    clock.advance(1)
    assert relay.verify(credential, 7) is None
    with pytest.raises(ValueError):
        DownloadRelay(clock, "n", b"", relay.locate)


@pytest_twisted.ensureDeferred
async def test_single_daemon_has_no_internal_routes(daemon: RunningDaemon) -> None:
    assert daemon.middleware.download_relay is None
    code, body = await get(f"{daemon.http_url}/_internal/download/1", {RELAY_HEADER: [b"x.1.y"]})
    assert code == 404
    assert (await get(f"{daemon.http_url}/_internal/other"))[0] == 404


@pytest.fixture
def metrics_settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, metrics_listen="tcp:0:interface=127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_metrics_listener_serves_no_internal_route(metrics_settings: Settings) -> None:
    service = Daemon(metrics_settings, reactor)
    service.startService()
    await service.ready
    try:
        service.middleware.download_relay = DownloadRelay(reactor, "a", SECRET, lambda job_id: succeed(None))
        port = service.listeners[-1].port.getHost().port
        credential = service.middleware.download_relay.credential(1)
        code, _ = await get(f"http://127.0.0.1:{port}/_internal/download/1", {RELAY_HEADER: [credential.encode()]})
        assert code == 404
    finally:
        await service.stopService()
