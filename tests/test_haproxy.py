"""
HAProxy from Debian in front of two C{twistd midjobs} nodes, configured as
C{etc/haproxy-cluster.cfg} says (docs/cluster.rst): what goes through it
reaches the nodes in turn, WebSocket sessions and transfers pass whole and
streaming, and the nodes read the client's address from its
C{X-Forwarded-For}.

The nodes here run on SQLite, each with its own database, so these tests
check what holds per connection; what needs one shared database (a job seen
from another node, a download relayed) is for the cluster's own tests.

HAProxy connects to the nodes from 127.0.0.2, the address their
C{[http] trusted_proxies} names, and the tests' clients from 127.0.0.1
(127.0.0.3 where the address matters): who is proxy and who is client is
then plain in the nodes' access logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue

from cluster_nodes import Node, NodeStarter, cluster_nodes  # noqa: F401 (fixture)
from conftest import ADMIN, SAMPLE_SERVICES, subprocess_env
from download_services import pattern_blocks, pattern_sha256
from haproxy_server import HAProxy, HAProxyStarter, haproxy, haproxy_or_skip, start_haproxy  # noqa: F401 (fixture)
from midjobs.client import Client, connect
from test_midclt import MIDCLT, midclt

MiB = 1024 * 1024
#: The address HAProxy connects to the nodes from: their trusted proxy.
PROXY_SOURCE = "127.0.0.2"
#: The address of a client whose address the tests look for in the logs.
CLIENT_SOURCE = "127.0.0.3"
NODE_CONFIG = f'[http]\ntrusted_proxies = ["{PROXY_SOURCE}"]\n'
PLUGINS = (SAMPLE_SERVICES, "upload_services", "download_services")


@attrs.frozen
class Deployment:
    """
    The nodes and the HAProxy in front of them.
    """

    nodes: list[Node]
    proxy: HAProxy


def create_admin(node: Node) -> None:
    """
    Make the tests' administrator on C{node}, through its UNIX socket (where
    the tests' own user needs no login).
    """
    user = {"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]}
    result = subprocess.run([MIDCLT, "-u", node.unix_url, "call", "user.create", json.dumps(user)],
                            env=subprocess_env(), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """
    Two nodes, each with the tests' administrator, behind one HAProxy: for
    the whole module (starting them is most of its time).
    """
    program = haproxy_or_skip()
    starter = NodeStarter(tmp_path_factory.mktemp("nodes"))
    proxy = None
    try:
        nodes = starter("n1", "n2", config=NODE_CONFIG, plugins=PLUGINS)
        for node in nodes:
            create_admin(node)
        proxy = start_haproxy(tmp_path_factory.mktemp("haproxy"), [(node.name, node.port) for node in nodes],
                              program=program, source=PROXY_SOURCE)
        yield Deployment(nodes, proxy)
    finally:
        if proxy is not None:
            proxy.stop()
        starter.stop_all()


# -- helpers -------------------------------------------------------------------


async def wait_for(predicate: Callable[[], Any], seconds: float = 30, what: str = "the condition") -> Any:
    """
    Poll C{predicate} (a function or a coroutine function) every 50 ms until
    it returns something true; return that.
    """
    deadline = reactor.seconds() + seconds
    while True:
        value = predicate()
        if isinstance(value, Deferred) or hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        assert reactor.seconds() < deadline, f"{what} did not come within {seconds} s"
        await deferLater(reactor, 0.05, lambda: None)


async def logged_in(url: str) -> Client:
    client = await connect(url, reactor=reactor)
    assert await client.login(*ADMIN)
    return client


async def ended(client: Client, job_id: int) -> dict[str, Any]:
    """
    The record of the job C{job_id} once it has ended.
    """
    async def record() -> dict[str, Any] | None:
        job: dict[str, Any] = await client.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
        return job if job["state"] in ("SUCCESS", "FAILED", "ABORTED") else None

    ended_job: dict[str, Any] = await wait_for(record, 60, f"the end of job {job_id}")
    return ended_job


async def curl(*args: str) -> tuple[int, str]:
    """
    Run curl; return the HTTP status and the body.
    """
    out, err, code = await getProcessOutputAndValue("curl", ["-sS", "-w", "\n%{http_code}", *args], reactor=reactor)
    assert code == 0, err.decode()
    body, _, status = out.decode().rpartition("\n")
    return int(status), body


def access_log_clients(node: Node, marker: str) -> list[str]:
    """
    The client addresses of C{node}'s access log lines for
    C{GET /_health?<marker>}, in order.
    """
    pattern = re.compile(rf'"([^"]+)" - - \[[^]]*\] "GET /_health\?{re.escape(marker)} ')
    return [match.group(1) for match in pattern.finditer(node.log())]


# -- round robin ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_http_requests_go_to_each_node_in_turn(deployment: Deployment) -> None:
    markers = [f"rr={uuid.uuid4().hex}" for _ in range(4)]
    for marker in markers:
        status, body = await curl(f"{deployment.proxy.url}/_health?{marker}")
        assert (status, body) == (200, "ok\n")

    def receivers() -> list[str] | None:
        found = [[node.name for node in deployment.nodes if access_log_clients(node, marker)] for marker in markers]
        return [names[0] for names in found] if all(len(names) == 1 for names in found) else None

    order = await wait_for(receivers, what="one access log line per request")
    assert order[0] != order[1] and order[:2] == order[2:], order
    assert sorted(order[:2]) == ["n1", "n2"]


@pytest_twisted.ensureDeferred
async def test_websocket_sessions_go_to_each_node_in_turn(deployment: Deployment) -> None:
    pids = []
    for _ in range(4):
        client = await logged_in(deployment.proxy.ws_url)
        try:
            pids.append((await client.call("system.info"))["pid"])
        finally:
            await client.close()
    assert pids[0] != pids[1] and pids[:2] == pids[2:], pids
    assert sorted(pids[:2]) == sorted(node.pid for node in deployment.nodes)


# -- a job over a WebSocket through HAProxy ------------------------------------


@pytest_twisted.ensureDeferred
async def test_job_with_progress_through_haproxy(deployment: Deployment) -> None:
    client = await logged_in(deployment.proxy.ws_url)
    try:
        records: list[dict[str, Any]] = []
        assert await client.call_job("core.job_test", {"sleep": 2}, callback=records.append) is True
    finally:
        await client.close()
    percents = [record["progress"]["percent"] for record in records if record["progress"]["percent"]]
    assert percents == sorted(percents) and percents[-1] == 100 and len(set(percents)) >= 2, percents
    assert records[-1]["state"] == "SUCCESS"


@pytest_twisted.ensureDeferred
async def test_midclt_job_through_haproxy(deployment: Deployment) -> None:
    out, err, code = await midclt("-u", deployment.proxy.ws_url, "-U", ADMIN[0], "-P", ADMIN[1],
                                  "call", "--job", "core.job_test", '{"sleep": 1}')
    assert (out, code) == ("True\n", 0), err
    assert "100.00%" in err


# -- transfers ------------------------------------------------------------------


class FifoWriter:
    """
    Writes C{size} bytes of the download pattern into a named pipe from a
    thread of its own: the first C{first} bytes at once, the rest once
    L{release}d.
    """

    def __init__(self, path: Path, size: int, first: int) -> None:
        os.mkfifo(path)
        self.path = path
        self.size = size
        self.first = first
        self.released = threading.Event()

    def start(self) -> Deferred[None]:
        """
        Start writing; the result fires when all is written and the pipe closed.
        """
        done: Deferred[None] = Deferred()
        threads = cast(IReactorFromThreads, reactor)

        def run() -> None:
            try:
                self._write()
            except BaseException as e:
                threads.callFromThread(done.errback, e)
            else:
                threads.callFromThread(done.callback, None)

        threading.Thread(target=run, name="fifo-writer", daemon=True).start()
        return done

    def _write(self) -> None:
        written = 0
        with open(self.path, "wb") as fifo:
            for block in pattern_blocks(self.size):
                if written >= self.first:
                    assert self.released.wait(120), "never released"
                fifo.write(block)
                written += len(block)

    def release(self) -> None:
        self.released.set()

    def abandon(self) -> None:
        """
        End the writer however far it got: a reader that comes and goes
        unblocks its wait for one, and its next write fails.
        """
        self.release()
        os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))


@pytest_twisted.ensureDeferred
async def test_upload_streams_through_haproxy(deployment: Deployment, tmp_path: Path) -> None:
    """
    A 64 MiB upload reaches its job while curl is still sending it: HAProxy
    holds no request body back.  curl reads the file from a named pipe, so
    it sends it as it comes (chunked), and the test holds the second half
    back until the job has had most of the first.
    """
    size, first = 64 * MiB, 32 * MiB
    writer = FifoWriter(tmp_path / "upload.fifo", size, first)
    written = writer.start()
    tag = uuid.uuid4().hex
    upload = Deferred.fromCoroutine(curl("-u", ":".join(ADMIN),
                  "-F", "data=" + json.dumps({"method": "upload.hash", "params": [tag]}),
                  "-F", f"file=@{writer.path};filename=big.bin", f"{deployment.proxy.url}/_upload"))
    clients = [await logged_in(node.ws_url) for node in deployment.nodes]
    try:
        async def running() -> tuple[Client, dict[str, Any]] | None:
            for client in clients:
                jobs = await client.call("core.get_jobs", [["method", "=", "upload.hash"], ["arguments", "=", [tag]]])
                if jobs and (jobs[0]["progress"]["extra"] or {}).get("bytes", 0) >= 16 * MiB:
                    return client, jobs[0]
            return None

        client, job = await wait_for(running, 60, "16 MiB of the upload in its job")
        assert job["state"] == "RUNNING"
        assert not written.called and not upload.called
        writer.release()
        await written
        status, body = await upload
        assert status == 200, body
        job_id = json.loads(body)["job_id"]
        assert job_id == job["id"]
        record = await ended(client, job_id)
        assert record["state"] == "SUCCESS", record
        assert record["result"] == [["big.bin", "application/octet-stream", pattern_sha256(size), size]]
    finally:
        if not written.called:
            written.addErrback(lambda _: None)
            writer.abandon()
        upload.addErrback(lambda _: None)
        for client in clients:
            await client.close()


@pytest_twisted.ensureDeferred
async def test_download_through_haproxy(deployment: Deployment, haproxy: HAProxyStarter, tmp_path: Path) -> None:
    """
    wget fetches a download through HAProxy, whole.  The download's token
    and job live on the node that made them until nodes share a database,
    so this HAProxy has that one node behind it.
    """
    node = deployment.nodes[0]
    proxy = haproxy([(node.name, node.port)])
    client = await logged_in(proxy.ws_url)
    try:
        size = 48 * MiB + 7
        job_id, path = await client.call("core.download", "dl.thread_write", [size], "report.bin")
        out, err, code = await getProcessOutputAndValue(
            "wget", ["--tries=1", "--content-disposition", "-q", "-P", str(tmp_path / "wget"), proxy.url + path],
            env={**os.environ, "LC_ALL": "C.UTF-8"}, reactor=reactor)
        assert code == 0, err.decode()
        saved = tmp_path / "wget" / "report.bin"
        digest = hashlib.sha256()
        with open(saved, "rb") as f:
            while block := f.read(MiB):
                digest.update(block)
        assert (saved.stat().st_size, digest.hexdigest()) == (size, pattern_sha256(size))
        record = await ended(client, job_id)
        assert (record["state"], record["result"]) == ("SUCCESS", size), record
    finally:
        await client.close()


# -- the client's address -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_nodes_read_the_client_address_haproxy_forwards(deployment: Deployment) -> None:
    node = deployment.nodes[0]
    spoofed = "X-Forwarded-For: 203.0.113.9"
    through_proxy = [f"xff={uuid.uuid4().hex}" for _ in deployment.nodes]
    # Through HAProxy, from 127.0.0.3, with a forged header: HAProxy appends
    # the real client, and the node takes that, not what the client wrote.
    for marker in through_proxy:
        assert (await curl("--interface", CLIENT_SOURCE, "-H", spoofed, f"{deployment.proxy.url}/_health?{marker}"))[0] == 200
    # Straight to the node: a trusted proxy's header is read; anyone else's is not.
    from_proxy, from_client = f"xff={uuid.uuid4().hex}", f"xff={uuid.uuid4().hex}"
    assert (await curl("--interface", PROXY_SOURCE, "-H", spoofed, f"{node.http_url}/_health?{from_proxy}"))[0] == 200
    assert (await curl("--interface", CLIENT_SOURCE, "-H", spoofed, f"{node.http_url}/_health?{from_client}"))[0] == 200

    def seen() -> list[list[str]] | None:
        clients = [sum((access_log_clients(n, marker) for n in deployment.nodes), []) for marker in through_proxy]
        clients += [access_log_clients(node, from_proxy), access_log_clients(node, from_client)]
        return clients if all(clients) else None

    *proxied, direct_from_proxy, direct_from_client = await wait_for(seen, what="the access log lines")
    assert proxied == [[CLIENT_SOURCE]] * len(through_proxy)
    assert direct_from_proxy == ["203.0.113.9"]
    assert direct_from_client == [CLIENT_SOURCE]


# -- a node that goes away ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_haproxy_sends_nothing_to_a_node_that_is_down(
    deployment: Deployment, cluster_nodes: NodeStarter, haproxy: HAProxyStarter
) -> None:
    """
    Once a node fails its health checks HAProxy sends every request to the
    others: clients see no error.
    """
    stays = deployment.nodes[0]
    (goes,) = cluster_nodes("n3", config=NODE_CONFIG, plugins=PLUGINS)
    proxy = haproxy([(stays.name, stays.port), (goes.name, goes.port)], source=PROXY_SOURCE,
                    server_options="check inter 200ms fall 2 rise 1")
    goes.kill()
    proxy.wait_states({"n3": "DOWN", stays.name: "UP"})
    markers = [f"down={uuid.uuid4().hex}" for _ in range(4)]
    for marker in markers:
        assert await curl(f"{proxy.url}/_health?{marker}") == (200, "ok\n")
    await wait_for(lambda: all(access_log_clients(stays, marker) for marker in markers),
                   what="every request on the node left")
