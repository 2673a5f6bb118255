"""
A node whose listener was away when another node ended a web session,
deleted an API key or locked a user checks the logins it holds once its
listener is back: those that ended meanwhile are logged out, the others stay.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted

from midjobs.auth import LOGIN_PASSWORD, ApiKeyStore, User, api_key_store_of
from midjobs.auth.realm import ended_logins_of
from midjobs.cluster.payloads import CATALOGUE_CHANNEL

from test_cluster_bus import Cluster, cluster, until  # noqa: F401 (fixture)

pytest_plugins = ["postgres_server"]


class Connection:
    """
    A logged-in connection of a node, as the middleware's sessions are.
    """

    def __init__(self, user: User) -> None:
        self.user: User | None = user
        self.peer = "test"

    def logout(self) -> None:
        self.user = None


@pytest_twisted.ensureDeferred
async def test_a_listener_back_logs_out_what_ended_meanwhile(cluster: Cluster) -> None:  # noqa: F811
    a = await cluster.node("a", 1, logins=True)
    b = await cluster.node("b", 1000, logins=True)
    assert a.middleware.users is not None and a.middleware.web_sessions is not None
    alice = await a.middleware.users.create({"username": "alice", "password": "pw"})
    bob = await a.middleware.users.create({"username": "bob", "password": "pw"})
    carol = await a.middleware.users.create({"username": "carol", "password": "pw"})
    keys = api_key_store_of(a.middleware.portal)
    assert isinstance(keys, ApiKeyStore)
    key = await keys.create({"name": "script", "username": "alice"})
    secret = await a.middleware.web_sessions.create(alice["id"])
    session = await a.middleware.web_sessions.use(secret)
    assert session is not None

    def login(user: dict[str, Any], **ids: int) -> Connection:
        connection = Connection(User(user["username"], frozenset(), LOGIN_PASSWORD, user_id=user["id"], **ids))
        b.middleware.sessions.add(connection)  # type: ignore[arg-type]
        return connection

    through_session = login(alice, web_session_id=session.id)
    through_key = login(alice, api_key_id=key["id"])
    by_password = login(alice)
    locked = login(bob)
    renamed = login(carol)

    # B hears nothing of the catalogue while A ends the session, deletes the
    # key, locks bob and renames carol.
    await b.listener.unlisten(CATALOGUE_CHANNEL)
    assert await a.middleware.web_sessions.end(secret)
    await keys.delete(key["id"])
    await a.middleware.api_key_deleted(key["id"])
    await a.middleware.users.update(bob["id"], {"locked": True})
    await a.middleware.user_changed(bob["id"], {**bob, "locked": True})
    renamed_carol = await a.middleware.users.update(carol["id"], {"username": "caroline"})
    await a.middleware.user_changed(carol["id"], renamed_carol)
    assert through_session.user is not None and through_key.user is not None and locked.user is not None

    # Its listener's session is cut; back, B checks the logins it holds.
    await b.cut()
    await until(lambda: through_session.user is None and through_key.user is None and locked.user is None)
    assert by_password.user is not None and by_password.user.username == "alice"
    await until(lambda: renamed.user is not None and renamed.user.username == "caroline")


@pytest_twisted.ensureDeferred
async def test_a_listener_back_hears_of_an_unlock_it_missed(cluster: Cluster) -> None:  # noqa: F811
    """
    A user locked, as B heard, then unlocked while B was away: B logs it in
    again once its listener is back, though it held no login of that user.
    """
    a = await cluster.node("a", 1, logins=True)
    b = await cluster.node("b", 1000, logins=True)
    assert a.middleware.users is not None
    bob = await a.middleware.users.create({"username": "bob", "password": "pw"})
    ended = ended_logins_of(b.middleware.portal)
    assert ended is not None
    locked = await a.middleware.users.update(bob["id"], {"locked": True})
    await a.middleware.user_changed(bob["id"], locked)
    await until(lambda: ended.ended(user_id=bob["id"], api_key_id=None, web_session_id=None))
    await b.listener.unlisten(CATALOGUE_CHANNEL)
    unlocked = await a.middleware.users.update(bob["id"], {"locked": False})
    await a.middleware.user_changed(bob["id"], unlocked)
    await b.cut()
    await until(lambda: not ended.ended(user_id=bob["id"], api_key_id=None, web_session_id=None))
