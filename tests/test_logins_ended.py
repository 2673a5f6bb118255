"""
A login whose user, API key or web session ends while it is being checked
does not complete after the daemon logged the others out: the realm knows
the logins that ended lately (L{EndedLogins}).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials, IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from zope.interface import implementer

from midjobs.auth import LOGIN_PASSWORD, AvatarId, IUser, Realm, UserStore
from midjobs.auth.endings import EndedLogins, LoginEnded
from midjobs.middleware import Middleware
from midjobs.store import close_database, open_database


class Now:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def test_ended_logins_are_remembered_for_a_while() -> None:
    now = Now()
    ended = EndedLogins(remember=60, most=3, clock=now)
    assert not ended.ended(user_id=1, api_key_id=2, web_session_id=3)
    ended.end("web_session_id", 3)
    assert ended.ended(user_id=1, api_key_id=2, web_session_id=3)
    assert not ended.ended(user_id=3, api_key_id=3, web_session_id=None)
    ended.end("api_key_id", 2)
    assert ended.ended(user_id=None, api_key_id=2, web_session_id=None)
    now.seconds += 61
    assert not ended.ended(user_id=1, api_key_id=2, web_session_id=3)


def test_ended_logins_keep_the_newest() -> None:
    ended = EndedLogins(remember=60, most=3, clock=Now())
    for user_id in range(1, 6):
        ended.end("user_id", user_id)
    assert [ended.ended(user_id=user_id, api_key_id=None, web_session_id=None) for user_id in range(1, 6)] == [
        False, False, True, True, True,
    ]  # fmt: skip
    assert len(ended) == 3


def test_each_kind_has_room_of_its_own() -> None:
    """
    Many sessions ending at once (expired ones pruned by a login) do not push
    out a user's deletion.
    """
    ended = EndedLogins(remember=60, most=3, clock=Now())
    ended.end("user_id", 1)
    for web_session_id in range(100):
        ended.end("web_session_id", web_session_id)
    assert ended.ended(user_id=1, api_key_id=None, web_session_id=None)
    assert ended.remembered("user_id") == [1]
    assert ended.remembered("web_session_id") == [97, 98, 99]


def test_only_what_a_login_comes_from() -> None:
    with pytest.raises(ValueError):
        EndedLogins().end("username", 1)


@pytest_twisted.async_yield_fixture
async def users(tmp_path: Path) -> Any:
    pool = open_database(str(tmp_path / "users.db"))
    store = UserStore(pool)
    await store.setup()
    yield store
    await close_database(pool)


@pytest_twisted.ensureDeferred
async def test_the_realm_refuses_what_ended(users: UserStore) -> None:
    alice = await users.create({"username": "alice", "password": "pw"})
    realm = Realm(users)
    realm.ended_logins.end("web_session_id", 7)

    def avatar_id(**ids: Any) -> AvatarId:
        return AvatarId("alice", LOGIN_PASSWORD, user_id=alice["id"], **ids)

    with pytest.raises(LoginEnded):
        await realm.requestAvatar(avatar_id(web_session_id=7), None, IUser)
    _, avatar, _ = await realm.requestAvatar(avatar_id(web_session_id=8), None, IUser)
    assert avatar.web_session_id == 8


@implementer(ICredentialsChecker)
class HeldChecker:
    """
    Vouches for the avatar id it is given, when the test lets it.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, avatar_id: AvatarId) -> None:
        self.avatar_id = avatar_id
        self.held: list[Deferred[AvatarId]] = []

    def requestAvatarId(self, credentials: ICredentials) -> Deferred[AvatarId]:
        d: Deferred[AvatarId] = Deferred()
        self.held.append(d)
        return d

    def let_go(self) -> None:
        held, self.held = self.held, []
        for d in held:
            d.callback(self.avatar_id)


@pytest.mark.parametrize(
    "ending, ids",
    [
        ("web session", {"web_session_id": 7}),
        ("API key", {"api_key_id": 9}),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_login_checked_before_its_source_ended_fails(
    users: UserStore, tmp_path: Path, ending: str, ids: dict[str, int]
) -> None:
    alice = await users.create({"username": "alice", "password": "pw"})
    checker = HeldChecker(AvatarId("alice", LOGIN_PASSWORD, user_id=alice["id"], **ids))
    middleware = Middleware(reactor, tmp_path, users=users, portal=Portal(Realm(users), [checker]))
    assert middleware.logins is not None
    in_flight = Deferred.fromCoroutine(middleware.logins.login(UsernamePassword(b"alice", b"pw"), "peer", "token"))
    # Its credentials are good: the checker vouches for them, but only after the end.
    if ending == "web session":
        middleware.web_sessions_ended([7])
    else:
        await middleware.api_key_deleted(9)
    checker.let_go()
    with pytest.raises(UnauthorizedLogin):
        await in_flight
    # Another login, from a source that did not end, goes through.
    checker.avatar_id = AvatarId("alice", LOGIN_PASSWORD, user_id=alice["id"])
    other = Deferred.fromCoroutine(middleware.logins.login(UsernamePassword(b"alice", b"pw"), "peer", "token"))
    checker.let_go()
    assert (await other).user_id == alice["id"]


@pytest_twisted.ensureDeferred
async def test_a_login_checked_before_its_user_was_locked_fails(users: UserStore, tmp_path: Path) -> None:
    alice = await users.create({"username": "alice", "password": "pw"})
    checker = HeldChecker(AvatarId("alice", LOGIN_PASSWORD, user_id=alice["id"]))
    middleware = Middleware(reactor, tmp_path, users=users, portal=Portal(Realm(users), [checker]))
    assert middleware.logins is not None

    def log_in() -> Deferred[Any]:
        assert middleware.logins is not None
        return Deferred.fromCoroutine(middleware.logins.login(UsernamePassword(b"alice", b"pw"), "peer", "password"))

    # The lock is told while the login is checked; the realm reads the user
    # as it was (the store is not changed here, as if read just before).
    in_flight = log_in()
    await middleware.user_changed(alice["id"], {**alice, "locked": True})
    checker.let_go()
    with pytest.raises(UnauthorizedLogin):
        await in_flight
    # Unlocked, the user logs in again.
    await middleware.user_changed(alice["id"], {**alice, "locked": False})
    again = log_in()
    checker.let_go()
    assert (await again).user_id == alice["id"]


class HeldReads:
    """
    A user store whose reads of a user (C{find}) the test answers, in the
    order it chooses: reads through a pool of several connections may come
    back in another order than they started.
    """

    def __init__(self, users: UserStore) -> None:
        self._users = users
        self.reads: list[Deferred[Any]] = []

    def find(self, id: int) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.reads.append(d)
        return d

    def __getattr__(self, name: str) -> Any:
        return getattr(self._users, name)


@pytest.mark.parametrize("newer", ["read", "told here"])
@pytest_twisted.ensureDeferred
async def test_a_stale_read_does_not_unlock(users: UserStore, tmp_path: Path, newer: str) -> None:
    """
    A read of a user that started before the user was locked, and comes back
    after the lock was learnt (from a newer read, or told by this node),
    does not undo it: the login checked meanwhile still fails.
    """
    alice = await users.create({"username": "alice", "password": "pw"})
    checker = HeldChecker(AvatarId("alice", LOGIN_PASSWORD, user_id=alice["id"]))
    held = HeldReads(users)
    middleware = Middleware(reactor, tmp_path, users=held, portal=Portal(Realm(users), [checker]))  # type: ignore[arg-type]  # a stand-in
    assert middleware.logins is not None
    in_flight = Deferred.fromCoroutine(middleware.logins.login(UsernamePassword(b"alice", b"pw"), "peer", "password"))
    stale = middleware.catalogue_changed_elsewhere("user", alice["id"])
    if newer == "read":
        fresh = middleware.catalogue_changed_elsewhere("user", alice["id"])
        held.reads[1].callback({**alice, "locked": True})
        await fresh
    else:
        await middleware.user_changed(alice["id"], {**alice, "locked": True})
    held.reads[0].callback(alice)
    await stale
    checker.let_go()
    with pytest.raises(UnauthorizedLogin):
        await in_flight


@pytest_twisted.ensureDeferred
async def test_locking_a_user_revokes_its_tokens(users: UserStore, tmp_path: Path) -> None:
    """
    Its tokens go, as its web sessions do: once unlocked, a token made
    before the lock does not log in again.
    """
    alice = await users.create({"username": "alice", "password": "pw"})
    middleware = Middleware(reactor, tmp_path, users=users)
    _, avatar, _ = await Realm(users).requestAvatar(AvatarId("alice", LOGIN_PASSWORD, user_id=alice["id"]), None, IUser)
    token = await middleware.tokens.create(avatar, 300)
    await middleware.user_changed(alice["id"], {**alice, "locked": True})
    await middleware.user_changed(alice["id"], {**alice, "locked": False})
    assert await middleware.tokens.lookup(token) is None
