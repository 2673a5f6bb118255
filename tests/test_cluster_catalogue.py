"""
One catalogue and transfers on any node, over real C{twistd midjobs} nodes
(L{cluster_nodes}) on a private PostgreSQL: a user made on n1 logs in on n2,
a token made on n1 logs in on n2, deleting the user on n2 logs its session
on n1 out at once, and a download prepared on n1 is fetched through n2 with
its bytes intact and its token used once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

from midjobs.client import Client, ClientCallError, connect
from midjobs.errors import ENOTAUTHENTICATED

from cluster_nodes import Node, NodeStarter, cluster_nodes  # noqa: F401 (fixture)
from test_cluster_failure import until
from test_identities import refused

pytest_plugins = ["postgres_server"]


@pytest_twisted.async_yield_fixture
async def two_nodes(postgres_database: str, cluster_nodes: NodeStarter) -> AsyncIterator[tuple[Node, Node, list[Client]]]:
    n1, n2 = cluster_nodes("n1", "n2", database_url=postgres_database)
    clients: list[Client] = []
    yield n1, n2, clients
    for client in clients:
        await client.close()


async def _client(node: Node, clients: list[Client], *, admin: bool = False) -> Client:
    client: Client = await connect(node.unix_url if admin else node.ws_url, reactor=reactor)
    clients.append(client)
    return client


async def _get(url: str) -> tuple[int, bytes]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        response = await treq.get(url, pool=pool)
        return response.code, await treq.content(response)
    finally:
        await pool.closeCachedConnections()


async def logged_out(client: Client) -> ClientCallError | None:
    """
    The error a call of C{client} now gets, or C{None} while it is logged in.
    """
    try:
        await client.call("auth.me")
    except ClientCallError as error:
        return error
    return None


@pytest_twisted.ensureDeferred
async def test_users_and_tokens_are_shared_and_a_deletion_logs_out_everywhere(
    two_nodes: tuple[Node, Node, list[Client]]
) -> None:
    n1, n2, clients = two_nodes
    admin1, admin2 = await _client(n1, clients, admin=True), await _client(n2, clients, admin=True)
    alice = await admin1.call("user.create", {"username": "alice", "password": "pw-alice", "roles": ["READONLY_ADMIN"]})
    on_n2 = await _client(n2, clients)
    assert await on_n2.call("auth.login", "alice", "pw-alice") is True
    on_n1 = await _client(n1, clients)
    assert await on_n1.call("auth.login", "alice", "pw-alice") is True
    token = await on_n1.call("auth.generate_token", 600)
    by_token = await _client(n2, clients)
    assert await by_token.call("auth.login_with_token", token) is True
    assert (await by_token.call("auth.me"))["pw_name"] == "alice"

    await admin2.call("user.delete", alice["id"])
    await refused(on_n2.call("auth.me"), ENOTAUTHENTICATED)
    # n1 hears of it through the database's notification, a moment later:
    # its session is logged out without a call of its own touching the store.
    refusal = await until(lambda: logged_out(on_n1), 5, "n1's session logged out")
    assert refusal.errno == ENOTAUTHENTICATED, refusal
    fresh = await _client(n1, clients)
    assert await fresh.call("auth.login_with_token", token) is False
    assert await fresh.call("auth.login", "alice", "pw-alice") is False


@pytest_twisted.ensureDeferred
async def test_a_download_of_a_job_on_n1_is_fetched_through_n2_once(
    two_nodes: tuple[Node, Node, list[Client]]
) -> None:
    n1, n2, clients = two_nodes
    admin1 = await _client(n1, clients, admin=True)
    data = os.urandom(8 * 1024 * 1024 + 17)
    # Under the node's filesystem root, where filesystem.get reads.
    source = n1.state_dir / "files" / "payload.bin"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(data)
    job_id, path = await admin1.call("core.download", "filesystem.get", [str(source)], "payload.bin")
    code, body = await _get(n2.http_url + path)
    assert code == 200
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    await admin1.call_job("core.job_wait", job_id)  # fails if the job did
    # The token was used: through either node, the URL is refused now.
    for node in (n1, n2):
        assert (await _get(node.http_url + path))[0] in (401, 403, 404)
