"""
A web session's end cuts its connections on every node of a cluster: over
real C{twistd midjobs} nodes (L{cluster_nodes}) on a private PostgreSQL, a
tab logged in on n2 with a token of a session made on n1 is logged out when
the session is logged out on n1; a tab of another session stays.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

from midjobs.client import Client, connect
from midjobs.errors import ENOTAUTHENTICATED

from cluster_nodes import Node, NodeStarter, cluster_nodes  # noqa: F401 (fixture)
from test_cluster_catalogue import logged_out
from test_cluster_failure import until

pytest_plugins = ["postgres_server"]

ALICE = ("alice", "pw-alice")


@pytest_twisted.async_yield_fixture
async def two_nodes(postgres_database: str, cluster_nodes: NodeStarter) -> AsyncIterator[tuple[Node, Node, list[Client]]]:  # noqa: F811
    n1, n2 = cluster_nodes("n1", "n2", database_url=postgres_database)
    clients: list[Client] = []
    yield n1, n2, clients
    for client in clients:
        await client.close()


async def _post(node: Node, path: str, **headers: list[str]) -> tuple[int, dict[str, Any], list[str]]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        response = await treq.post(node.http_url + path, headers={"X-Requested-With": ["test"], **headers}, pool=pool)
        text = await response.text()
        return response.code, json.loads(text) if text else {}, response.headers.getRawHeaders("Set-Cookie", [])
    finally:
        await pool.closeCachedConnections()


async def _log_in(node: Node) -> str:
    basic = "Basic " + base64.b64encode(":".join(ALICE).encode()).decode()
    code, body, set_cookie = await _post(node, "/_session", Authorization=[basic])
    assert code == 200, body
    return SimpleCookie(set_cookie[0])["midjobs_session"].value


async def _tab(node: Node, secret: str, clients: list[Client]) -> Client:
    code, body, _ = await _post(node, "/_session/token", Cookie=[f"midjobs_session={secret}"])
    assert code == 200 and body["token"], body
    client: Client = await connect(node.ws_url, reactor=reactor)
    clients.append(client)
    assert await client.call("auth.login_with_token", body["token"]) is True
    return client


@pytest_twisted.ensureDeferred
async def test_a_logout_on_n1_cuts_the_sessions_tab_on_n2(two_nodes: tuple[Node, Node, list[Client]]) -> None:
    n1, n2, clients = two_nodes
    admin: Client = await connect(n1.unix_url, reactor=reactor)
    clients.append(admin)
    await admin.call("user.create", {"username": ALICE[0], "password": ALICE[1], "roles": ["READONLY_ADMIN"]})
    secret, other = await _log_in(n1), await _log_in(n2)
    # The cookie made on n1 is traded on n2 (a balancer sends the tab there).
    on_n2, on_n1 = await _tab(n2, secret, clients), await _tab(n1, secret, clients)
    stays = await _tab(n2, other, clients)

    code, body, _ = await _post(n1, "/_session/logout", Cookie=[f"midjobs_session={secret}"])
    assert (code, body) == (200, {"ended": True})
    refusal = await logged_out(on_n1)
    assert refusal is not None and refusal.errno == ENOTAUTHENTICATED
    # n2 hears of it through the database's notification, a moment later.
    refusal = await until(lambda: logged_out(on_n2), 5, "n2's tab logged out")
    assert refusal.errno == ENOTAUTHENTICATED, refusal
    assert (await stays.call("auth.me"))["pw_name"] == ALICE[0]
