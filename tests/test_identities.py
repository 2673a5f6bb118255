"""
Ownership follows identities, not names (issue 11, findings 9, 12 and 13),
over real connections: a stored user's stable id, and the trusted UNIX-socket
peer as an identity of its own.
"""

from __future__ import annotations

import errno
from typing import Any, Callable

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from conftest import RunningDaemon
from midjobs.client import Client, ClientCallError, connect
from midjobs.config import Settings
from midjobs.errors import ENOTAUTHENTICATED


def password_of(username: str) -> str:
    return f"{username}-secret-pass"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, plugins=(*settings.plugins, "access_services"))



async def log_in(daemon: RunningDaemon, connections: list[Client], username: str, password: str | None = None) -> Client:
    client = await connect(daemon.ws_url, reactor=reactor)
    connections.append(client)
    assert await client.login(username, password or password_of(username))
    return client


async def create_user(admin: Client, username: str, roles: list[str] | None = None) -> dict[str, Any]:
    return await admin.call("user.create", {"username": username, "password": password_of(username), "roles": roles or []})


async def refused(call: Deferred[Any], code: int) -> ClientCallError:
    with pytest.raises(ClientCallError) as info:
        await call
    assert info.value.errno == code, info.value
    return info.value


async def job_ids(client: Client, *filters: Any) -> set[int]:
    return {job["id"] for job in await client.call("core.get_jobs", list(filters))}


async def record(client: Client, job_id: int) -> dict[str, Any]:
    return await client.call("core.get_jobs", [["id", "=", job_id]], {"get": True})


class Events:
    """
    The C{core.get_jobs} events one client receives, and a way to wait for one.
    """

    def __init__(self) -> None:
        self.received: list[tuple[str, int, dict[str, Any]]] = []
        self._waiters: list[tuple[Callable[..., bool], Deferred[dict[str, Any]]]] = []

    def __call__(self, msg: str, collection: str, id: int, fields: dict[str, Any]) -> None:
        self.received.append((msg, id, fields))
        for waiter in list(self._waiters):
            if waiter[0](msg, id, fields):
                self._waiters.remove(waiter)
                waiter[1].callback(fields)

    def wait_for(self, predicate: Callable[..., bool]) -> Deferred[dict[str, Any]]:
        for msg, id, fields in self.received:
            if predicate(msg, id, fields):
                d: Deferred[dict[str, Any]] = Deferred()
                d.callback(fields)
                return d
        d = Deferred()
        self._waiters.append((predicate, d))
        return d.addTimeout(10, reactor)

    def ids(self) -> set[int]:
        return {id for _, id, _ in self.received}


# Finding 9: the UNIX-socket root and a stored user named root.


@pytest_twisted.ensureDeferred
async def test_a_stored_root_owns_nothing_of_the_unix_socket_root(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client]
) -> None:
    stored = await create_user(admin_client, "root", ["RUNNER"])
    impostor = await log_in(daemon, connections, "root")
    events = Events()
    await impostor.subscribe("core.get_jobs", events)
    local = await connect(daemon.unix_url, reactor=reactor)
    connections.append(local)

    theirs = await local.call("access.hold", "local-root")
    own = await impostor.call("access.hold", "stored-root")

    # The stored root lists, reads and aborts only its own job.
    assert await job_ids(impostor) == {own}
    assert await impostor.call("core.get_jobs", [["id", "=", theirs]]) == []
    await refused(impostor.call("core.job_abort", theirs), errno.EPERM)
    await refused(impostor.call_job("core.job_wait", theirs), errno.EPERM)
    assert (await record(local, theirs))["credentials"] == {"type": "UNIX_SOCKET", "data": {"username": "root"}}
    assert (await record(local, own))["credentials"] == {
        "type": "LOGIN_PASSWORD",
        "data": {"username": "root", "user_id": stored["id"]},
    }
    await impostor.call("core.job_abort", own)

    # Nor does it hear of the local root's job: its events come before this one.
    await local.call("access.release", "local-root")
    await local.call_job("core.job_wait", theirs)
    waited = await local.call("core.job_test", {"sleep": 0})
    await events.wait_for(lambda msg, id, f: id == own and f["state"] == "ABORTED")
    assert theirs not in events.ids() and waited not in events.ids()
    assert (await record(local, theirs))["state"] == "SUCCESS"


# Finding 13: names are reused, identities are not.


@pytest_twisted.ensureDeferred
async def test_rename_keeps_ownership_and_an_old_name_owns_nothing(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client]
) -> None:
    alice = await create_user(admin_client, "alice", ["RUNNER"])
    session = await log_in(daemon, connections, "alice")
    held = await session.call("access.hold", "renamed")

    await admin_client.call("user.update", alice["id"], {"username": "alice2"})
    # The renamed user keeps their job, in a session of before and one of after.
    assert await job_ids(session) == {held}
    assert (await session.call("access.whoami"))["username"] == "alice2"
    renamed = await log_in(daemon, connections, "alice2", password_of("alice"))
    assert await job_ids(renamed) == {held}

    # A new user with the old name sees nothing of it, and may not touch it.
    await create_user(admin_client, "alice", ["RUNNER"])
    newcomer = await log_in(daemon, connections, "alice")
    assert await job_ids(newcomer) == set()
    await refused(newcomer.call("core.job_abort", held), errno.EPERM)
    await refused(newcomer.call_job("core.job_wait", held), errno.EPERM)

    # Nor does one who takes the name of a deleted user.
    await admin_client.call("user.delete", alice["id"])
    await create_user(admin_client, "alice2", ["RUNNER"])
    successor = await log_in(daemon, connections, "alice2")
    assert await job_ids(successor) == set()
    await refused(successor.call("core.job_abort", held), errno.EPERM)

    await admin_client.call("access.release", "renamed")
    await admin_client.call_job("core.job_wait", held)


@pytest_twisted.ensureDeferred
async def test_a_deleted_users_token_does_not_log_in_a_new_account_of_the_same_name(
    daemon: RunningDaemon, admin_client: Client, anonymous_client: Client, connections: list[Client]
) -> None:
    bob = await create_user(admin_client, "bob")
    session = await log_in(daemon, connections, "bob")
    token = await session.call("auth.generate_token", 600)
    await admin_client.call("user.delete", bob["id"])
    assert (await daemon.middleware.tokens.lookup(token)) is None
    await create_user(admin_client, "bob")
    assert await anonymous_client.call("auth.login_with_token", token) is False
    await refused(anonymous_client.call("auth.me"), ENOTAUTHENTICATED)


@pytest_twisted.ensureDeferred
async def test_a_token_survives_a_rename_and_keeps_its_identity(
    daemon: RunningDaemon, admin_client: Client, anonymous_client: Client, connections: list[Client]
) -> None:
    carol = await create_user(admin_client, "carol", ["RUNNER"])
    session = await log_in(daemon, connections, "carol")
    held = await session.call("access.hold", "token-rename")
    token = await session.call("auth.generate_token", 600)
    await admin_client.call("user.update", carol["id"], {"username": "carol2"})
    await create_user(admin_client, "carol", ["RUNNER"])
    assert await anonymous_client.call("auth.login_with_token", token) is True
    me = await anonymous_client.call("auth.me")
    assert me["pw_name"] == "carol2"
    assert me["credentials"]["data"]["user_id"] == carol["id"]
    assert await job_ids(anonymous_client) == {held}
    await admin_client.call("access.release", "token-rename")
    await admin_client.call_job("core.job_wait", held)


# Finding 12: what is deleted takes its tokens with it.


@pytest_twisted.ensureDeferred
async def test_deleting_an_api_key_revokes_the_tokens_made_from_it(
    daemon: RunningDaemon, admin_client: Client, anonymous_client: Client, connections: list[Client]
) -> None:
    await create_user(admin_client, "dave")
    key = await admin_client.call("api_key.create", {"name": "ci", "username": "dave"})
    other = await admin_client.call("api_key.create", {"name": "other", "username": "dave"})
    by_key = await connect(daemon.ws_url, reactor=reactor)
    connections.append(by_key)
    assert await by_key.login_with_api_key(key["key"])
    token = await by_key.call("auth.generate_token", 600)
    # A token made by a session that logged in with a token of the key.
    by_token = await connect(daemon.ws_url, reactor=reactor)
    connections.append(by_token)
    assert await by_token.call("auth.login_with_token", token) is True
    grandchild = await by_token.call("auth.generate_token", 600)
    # The same user's password session and the other key's tokens are not derived from it.
    by_password = await log_in(daemon, connections, "dave")
    unrelated = await by_password.call("auth.generate_token", 600)
    by_other = await connect(daemon.ws_url, reactor=reactor)
    connections.append(by_other)
    assert await by_other.login_with_api_key(other["key"])
    from_other = await by_other.call("auth.generate_token", 600)

    await admin_client.call("api_key.delete", key["id"])

    tokens = daemon.middleware.tokens
    assert (await tokens.lookup(token)) is None and (await tokens.lookup(grandchild)) is None
    assert await anonymous_client.call("auth.login_with_token", token) is False
    assert await anonymous_client.call("auth.login_with_token", grandchild) is False
    await refused(by_key.call("auth.me"), ENOTAUTHENTICATED)
    await refused(by_token.call("auth.me"), ENOTAUTHENTICATED)
    assert (await by_password.call("auth.me"))["pw_name"] == "dave"
    assert (await by_other.call("auth.me"))["pw_name"] == "dave"
    assert (await tokens.lookup(unrelated)) is not None and (await tokens.lookup(from_other)) is not None
    assert await anonymous_client.call("auth.login_with_token", from_other) is True


@pytest_twisted.ensureDeferred
async def test_deleting_a_user_revokes_every_token_derived_from_it(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client]
) -> None:
    erin = await create_user(admin_client, "erin")
    frank = await create_user(admin_client, "frank")
    key = await admin_client.call("api_key.create", {"name": "ci", "username": "erin"})
    session = await log_in(daemon, connections, "erin")
    by_key = await connect(daemon.ws_url, reactor=reactor)
    connections.append(by_key)
    assert await by_key.login_with_api_key(key["key"])
    erins = [await session.call("auth.generate_token", 600), await by_key.call("auth.generate_token", 600)]
    franks = await (await log_in(daemon, connections, "frank")).call("auth.generate_token", 600)

    await admin_client.call("user.delete", erin["id"])

    tokens = daemon.middleware.tokens
    assert [await tokens.lookup(token) for token in erins] == [None, None]
    assert (await tokens.lookup(franks)).user.user_id == frank["id"]
