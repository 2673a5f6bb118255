"""
Tests of the authentication layer and the SQLite store, against a real
database file and real sockets.
"""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
import tempfile
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import IRealm
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import UNIXClientEndpoint, UNIXServerEndpoint
from twisted.python import threadable
from zope.interface.verify import verifyClass, verifyObject

from midjobs.auth import (
    FULL_ADMIN,
    LOGIN_PASSWORD,
    READONLY_ADMIN,
    UNIX_SOCKET,
    AvatarId,
    IPeerCredentials,
    IUser,
    PasswordChecker,
    PeerCredentials,
    PeerCredentialsChecker,
    Realm,
    User,
    UserStore,
    default_trusted_uids,
    hash_password,
    login,
    make_portal,
    peer_credentials,
    verify_password,
)
from midjobs.auth import users as users_module
from midjobs.errors import CallError, ValidationErrors
from midjobs.store import close_database, ensure_schema, open_database

PASSWORD = "correct horse"


@pytest_twisted.async_yield_fixture
async def users(pool):
    store = UserStore(pool)
    await store.setup()
    yield store


@pytest_twisted.async_yield_fixture
async def alice(users):
    yield await users.create(
        {"username": "alice", "password": PASSWORD, "full_name": "Alice", "roles": [READONLY_ADMIN]}
    )


async def validation_errors(d: defer.Deferred[Any]) -> dict[str, int]:
    """
    The attributes and errnos of the L{ValidationErrors} that C{d} fails with.
    """
    with pytest.raises(ValidationErrors) as info:
        await d
    return {error.attribute: error.errno for error in info.value.errors}


# hashing


@pytest.mark.production_hash_cost
def test_hash_roundtrip():
    encoded = hash_password(PASSWORD)
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert verify_password(PASSWORD, encoded)
    assert not verify_password(PASSWORD + "!", encoded)
    assert not verify_password("", encoded)


def test_hash_is_salted():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)


def test_hash_unicode_password():
    encoded = hash_password("pässwörd ✓")
    assert verify_password("pässwörd ✓", encoded)
    assert not verify_password("passwort ✓", encoded)


def test_hash_rejects_non_str():
    with pytest.raises(TypeError):
        hash_password(b"bytes")  # type: ignore[arg-type]


@pytest.mark.production_hash_cost
@pytest.mark.parametrize(
    "mangle",
    [
        lambda e: "",
        lambda e: "garbage",
        lambda e: e.replace("scrypt$", "bcrypt$", 1),
        lambda e: e + "$extra",
        lambda e: e.rsplit("$", 1)[0],
        lambda e: e.replace("$16384$", "$abc$", 1),
        lambda e: e.replace("$16384$", "$-16384$", 1),
        lambda e: e.replace("$16384$", "$1000$", 1),  # not a power of two
        lambda e: e.replace("$16384$", "$1073741824$", 1),  # absurd cost
        lambda e: e.replace("$8$", "$0$", 1),
        lambda e: "$".join(e.split("$")[:4] + ["not*base64", e.split("$")[5]]),
        lambda e: "$".join(e.split("$")[:5] + ["not*base64"]),
        lambda e: "$".join(e.split("$")[:5] + [""]),
        lambda e: "$".join(e.split("$")[:4] + ["", e.split("$")[5]]),
        lambda e: None,
    ],
)
def test_verify_malformed(mangle):
    assert verify_password(PASSWORD, mangle(hash_password(PASSWORD))) is False


def test_verify_non_str_password():
    assert verify_password(None, hash_password(PASSWORD)) is False  # type: ignore[arg-type]


# database


@pytest_twisted.ensureDeferred
async def test_database_pragmas(pool):
    rows = await pool.runQuery("PRAGMA journal_mode")
    assert rows[0][0] == "wal"
    rows = await pool.runQuery("PRAGMA foreign_keys")
    assert rows[0][0] == 1
    rows = await pool.runQuery("PRAGMA busy_timeout")
    assert rows[0][0] == 5000
    assert pool.min == pool.max == 1


@pytest_twisted.ensureDeferred
async def test_database_runs_off_the_reactor_thread(pool):
    def where(txn):
        return threadable.isInIOThread()

    assert threadable.isInIOThread()
    assert await pool.runInteraction(where) is False


@pytest_twisted.ensureDeferred
async def test_ensure_schema_applies_each_statement_once(pool):
    statements = ["CREATE TABLE jobs (id INTEGER PRIMARY KEY, method TEXT NOT NULL)"]
    assert await ensure_schema(pool, "jobs", statements) == 1
    assert await ensure_schema(pool, "jobs", statements) == 0

    statements.append("ALTER TABLE jobs ADD COLUMN state TEXT")
    assert await ensure_schema(pool, "jobs", statements) == 1
    await pool.runOperation("INSERT INTO jobs (method, state) VALUES ('x', 'RUNNING')")

    rows = await pool.runQuery("SELECT name, version FROM schema_version ORDER BY name")
    assert rows == [("jobs", 2)]


@pytest_twisted.ensureDeferred
async def test_ensure_schema_failure_rolls_back(pool):
    statements = ["CREATE TABLE a (id INTEGER PRIMARY KEY)", "THIS IS NOT SQL"]
    with pytest.raises(sqlite3.OperationalError):
        await ensure_schema(pool, "broken", statements)
    assert await pool.runQuery("SELECT name FROM sqlite_master WHERE name = 'a'") == []
    assert await pool.runQuery("SELECT * FROM schema_version") == []


@pytest_twisted.ensureDeferred
async def test_ensure_schema_refuses_newer_database(pool):
    await ensure_schema(pool, "part", ["CREATE TABLE t (x)", "CREATE TABLE u (x)"])
    with pytest.raises(RuntimeError, match="newer"):
        await ensure_schema(pool, "part", ["CREATE TABLE t (x)"])


@pytest_twisted.ensureDeferred
async def test_foreign_keys_enforced(pool):
    await ensure_schema(
        pool,
        "fk",
        [
            "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
            "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id))",
        ],
    )
    with pytest.raises(sqlite3.IntegrityError):
        await pool.runOperation("INSERT INTO child (parent) VALUES (42)")


@pytest_twisted.ensureDeferred
async def test_data_survives_reopen(tmp_path):
    path = str(tmp_path / "again.db")
    pool = open_database(path)
    store = UserStore(pool)
    await store.setup()
    await store.create({"username": "bob", "password": PASSWORD})
    await close_database(pool)

    pool = open_database(path)
    try:
        store = UserStore(pool)
        assert await store.setup() == 0
        assert [user["username"] for user in await store.query()] == ["bob"]
    finally:
        await close_database(pool)


# users


@pytest_twisted.ensureDeferred
async def test_create_and_get(users):
    user = await users.create(
        {
            "username": "alice",
            "password": PASSWORD,
            "full_name": "Alice Liddell",
            "roles": [FULL_ADMIN, "SHARING_ADMIN"],
            "locked": False,
        }
    )
    assert user == {
        "id": user["id"],
        "username": "alice",
        "full_name": "Alice Liddell",
        "roles": [FULL_ADMIN, "SHARING_ADMIN"],
        "locked": False,
    }
    assert isinstance(user["id"], int)
    assert await users.get(user["id"]) == user
    assert await users.get_by_username("alice") == user
    assert await users.get_by_username("nobody") is None


@pytest_twisted.ensureDeferred
async def test_create_defaults(users):
    user = await users.create({"username": "b", "password": "x"})
    assert user["full_name"] == ""
    assert user["roles"] == []
    assert user["locked"] is False


@pytest_twisted.ensureDeferred
async def test_roles_deduplicated(users):
    user = await users.create({"username": "b", "password": "x", "roles": ["A", "B", "A"]})
    assert user["roles"] == ["A", "B"]


@pytest_twisted.ensureDeferred
async def test_get_missing(users):
    with pytest.raises(CallError) as info:
        await users.get(12345)
    assert info.value.errno == errno.ENOENT


@pytest_twisted.ensureDeferred
async def test_query(users):
    assert await users.query() == []
    a = await users.create({"username": "a", "password": "x"})
    b = await users.create({"username": "b", "password": "y", "locked": True})
    assert await users.query() == [a, b]


@pytest_twisted.ensureDeferred
async def test_update(users, alice):
    updated = await users.update(
        alice["id"],
        {"full_name": "Alice L.", "roles": [FULL_ADMIN], "locked": True, "username": "alice2"},
    )
    assert updated == {
        "id": alice["id"],
        "username": "alice2",
        "full_name": "Alice L.",
        "roles": [FULL_ADMIN],
        "locked": True,
    }
    assert await users.get(alice["id"]) == updated
    assert await users.update(alice["id"], {}) == updated
    # Renaming a user to its own name is no clash.
    assert await users.update(alice["id"], {"username": "alice2"}) == updated


@pytest_twisted.ensureDeferred
async def test_update_password_rehashes(users, pool, alice):
    (before,) = await pool.runQuery("SELECT password_hash FROM users WHERE id = ?", (alice["id"],))
    await users.update(alice["id"], {"password": "new secret"})
    (after,) = await pool.runQuery("SELECT password_hash FROM users WHERE id = ?", (alice["id"],))
    assert before != after
    assert verify_password("new secret", after[0])
    assert await users.check_password("alice", PASSWORD) is None
    assert (await users.check_password("alice", "new secret"))["id"] == alice["id"]


@pytest_twisted.ensureDeferred
async def test_update_missing(users):
    with pytest.raises(CallError) as info:
        await users.update(999, {"full_name": "x"})
    assert info.value.errno == errno.ENOENT


@pytest_twisted.ensureDeferred
async def test_delete(users, alice):
    assert await users.delete(alice["id"]) is None
    assert await users.query() == []
    with pytest.raises(CallError) as info:
        await users.delete(alice["id"])
    assert info.value.errno == errno.ENOENT
    # The name is free again.
    await users.create({"username": "alice", "password": "x"})


@pytest_twisted.ensureDeferred
async def test_password_never_returned(users, alice):
    results = [
        alice,
        await users.get(alice["id"]),
        await users.get_by_username("alice"),
        await users.update(alice["id"], {"password": "other"}),
        await users.check_password("alice", "other"),
        *(await users.query()),
    ]
    for user in results:
        assert set(user) == {"id", "username", "full_name", "roles", "locked"}
        assert "other" not in repr(user) and "scrypt" not in repr(user)


@pytest_twisted.ensureDeferred
async def test_hashing_runs_off_the_reactor_thread(users, monkeypatch):
    threads = []

    def spy(function):
        def wrapper(*args):
            threads.append(threadable.isInIOThread())
            return function(*args)

        return wrapper

    monkeypatch.setattr(users_module, "hash_password", spy(hash_password))
    monkeypatch.setattr(users_module, "verify_password", spy(verify_password))
    user = await users.create({"username": "t", "password": "x"})
    await users.update(user["id"], {"password": "y"})
    await users.check_password("t", "y")
    await users.check_password("nobody", "y")
    # Four calls, and one more the first time an unknown user needs the dummy hash.
    assert len(threads) >= 4 and not any(threads)


# validation


@pytest.mark.parametrize(
    "data, attributes",
    [
        ({}, {"username", "password"}),
        ({"password": "x"}, {"username"}),
        ({"username": "a"}, {"password"}),
        ({"username": 5, "password": "x"}, {"username"}),
        ({"username": "", "password": "x"}, {"username"}),
        ({"username": "a" * 33, "password": "x"}, {"username"}),
        ({"username": "-a", "password": "x"}, {"username"}),
        ({"username": "a b", "password": "x"}, {"username"}),
        ({"username": "a/b", "password": "x"}, {"username"}),
        ({"username": "ä", "password": "x"}, {"username"}),
        ({"username": "a\n", "password": "x"}, {"username"}),
        ({"username": "a", "password": ""}, {"password"}),
        ({"username": "a", "password": 5}, {"password"}),
        ({"username": "a", "password": None}, {"password"}),
        ({"username": "a", "password": "x", "full_name": 5}, {"full_name"}),
        ({"username": "a", "password": "x", "roles": "FULL_ADMIN"}, {"roles"}),
        ({"username": "a", "password": "x", "roles": ["admin"]}, {"roles.0"}),
        ({"username": "a", "password": "x", "roles": ["A", "1X", 3]}, {"roles.1", "roles.2"}),
        ({"username": "a", "password": "x", "roles": ["_X"]}, {"roles.0"}),
        ({"username": "a", "password": "x", "locked": 1}, {"locked"}),
        ({"username": "a", "password": "x", "locked": "yes"}, {"locked"}),
        ({"username": "a", "password": "x", "id": 3}, {"id"}),
        ({"username": "a", "password": "x", "password_hash": "h"}, {"password_hash"}),
        ({"username": "-", "password": "", "extra": 1}, {"username", "password", "extra"}),
        (["username", "a"], {"data"}),
    ],
)
@pytest_twisted.ensureDeferred
async def test_create_validation(users, data, attributes):
    errors = await validation_errors(users.create(data))
    assert set(errors) == attributes
    assert set(errors.values()) == {errno.EINVAL}
    assert await users.query() == []


@pytest.mark.parametrize(
    "username", ["a", "A" * 32, ".hidden", "_x", "a-b", "a.b_c-9", "0", "root"]
)
@pytest_twisted.ensureDeferred
async def test_valid_usernames(users, username):
    user = await users.create({"username": username, "password": "x"})
    assert user["username"] == username


@pytest_twisted.ensureDeferred
async def test_username_unique(users, alice):
    errors = await validation_errors(users.create({"username": "alice", "password": "x"}))
    assert errors == {"username": errno.EEXIST}
    # A taken name is reported with the other errors, at once.
    errors = await validation_errors(users.create({"username": "alice", "password": ""}))
    assert errors == {"username": errno.EEXIST, "password": errno.EINVAL}
    assert len(await users.query()) == 1


@pytest_twisted.ensureDeferred
async def test_update_validation(users, alice):
    other = await users.create({"username": "bob", "password": "x"})
    for data, attributes in [
        ({"username": "bob"}, {"username"}),
        ({"username": "-x"}, {"username"}),
        ({"password": ""}, {"password"}),
        ({"roles": ["lower"]}, {"roles.0"}),
        ({"locked": 0}, {"locked"}),
        ({"full_name": None}, {"full_name"}),
        ({"id": 7}, {"id"}),
    ]:
        errors = await validation_errors(users.update(alice["id"], data))
        assert set(errors) == attributes, data
    assert await users.get(alice["id"]) == alice
    assert await users.get(other["id"]) == other
    assert await users.check_password("alice", PASSWORD) is not None


# portal


@pytest.fixture
def portal(users):
    return make_portal(users, {0, os.getuid()})


def test_interfaces():
    assert verifyClass(IUser, User)
    assert verifyObject(IUser, User("a", frozenset(), LOGIN_PASSWORD))
    assert verifyObject(IPeerCredentials, PeerCredentials(pid=1, uid=2, gid=3))
    assert verifyClass(IRealm, Realm)


def test_user_avatar():
    admin = User("a", {FULL_ADMIN}, LOGIN_PASSWORD)
    assert admin.roles == frozenset({FULL_ADMIN})
    assert admin.is_full_admin
    assert admin.has_role(READONLY_ADMIN) and admin.has_role("ANYTHING")
    reader = User("r", frozenset({READONLY_ADMIN}), LOGIN_PASSWORD)
    assert not reader.is_full_admin
    assert reader.has_role(READONLY_ADMIN) and not reader.has_role("SHARING_ADMIN")
    assert reader.to_credentials() == {"type": "LOGIN_PASSWORD", "data": {"username": "r"}}
    with pytest.raises(AttributeError):
        reader.username = "x"  # type: ignore[misc]


@pytest_twisted.ensureDeferred
async def test_login_success(portal, alice):
    user = await login(portal, UsernamePassword("alice", PASSWORD))
    assert IUser.providedBy(user)
    assert user == User("alice", frozenset({READONLY_ADMIN}), LOGIN_PASSWORD, user_id=alice["id"])
    assert user.to_credentials() == {"type": "LOGIN_PASSWORD", "data": {"username": "alice", "user_id": alice["id"]}}


@pytest_twisted.ensureDeferred
async def test_login_with_bytes(portal, alice):
    # HTTP basic authentication hands the checker bytes.
    user = await login(portal, UsernamePassword(b"alice", PASSWORD.encode()))
    assert user.username == "alice"


@pytest_twisted.ensureDeferred
async def test_login_portal_gives_logout(portal, alice):
    interface, avatar, logout = await portal.login(
        UsernamePassword("alice", PASSWORD), None, IUser
    )
    assert interface is IUser and avatar.username == "alice"
    assert logout() is None


@pytest_twisted.ensureDeferred
async def test_login_reads_current_roles(portal, users, alice):
    await users.update(alice["id"], {"roles": [FULL_ADMIN]})
    user = await login(portal, UsernamePassword("alice", PASSWORD))
    assert user.is_full_admin


@pytest.mark.parametrize(
    "username, password",
    [
        ("alice", "wrong"),
        ("alice", PASSWORD.upper()),
        ("nobody", PASSWORD),
        ("alice", ""),
        ("", ""),
        ("locked", PASSWORD),
        (b"\xff", PASSWORD),
        ("alice", b"\xff"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_login_failures(portal, users, alice, username, password):
    await users.create({"username": "locked", "password": PASSWORD, "locked": True})
    with pytest.raises(UnauthorizedLogin) as info:
        await login(portal, UsernamePassword(username, password))
    assert str(info.value) == "Invalid username or password"


@pytest.mark.production_hash_cost
@pytest_twisted.ensureDeferred
async def test_unknown_user_costs_a_verification(users, alice, monkeypatch):
    calls = []

    def counting(password, encoded):
        calls.append(encoded)
        return verify_password(password, encoded)

    monkeypatch.setattr(users_module, "verify_password", counting)
    checker = PasswordChecker(users)
    for username in ("alice", "nobody"):
        with pytest.raises(UnauthorizedLogin):
            await checker.requestAvatarId(UsernamePassword(username, "wrong"))
    assert len(calls) == 2
    assert all(encoded.startswith("scrypt$16384$8$1$") for encoded in calls)


@pytest_twisted.ensureDeferred
async def test_realm_rejects_vanished_or_locked_user(users, alice):
    realm = Realm(users)
    avatar_id = AvatarId("alice", LOGIN_PASSWORD)
    await users.update(alice["id"], {"locked": True})
    with pytest.raises(UnauthorizedLogin):
        await realm.requestAvatar(avatar_id, None, IUser)
    await users.delete(alice["id"])
    with pytest.raises(UnauthorizedLogin):
        await realm.requestAvatar(avatar_id, None, IUser)


@pytest_twisted.ensureDeferred
async def test_realm_finds_the_user_by_id_not_by_name(users, alice):
    realm = Realm(users)
    avatar_id = AvatarId("alice", LOGIN_PASSWORD, user_id=alice["id"], api_key_id=4)
    await users.update(alice["id"], {"username": "alice2", "roles": []})
    _, user, _ = await realm.requestAvatar(avatar_id, None, IUser)
    assert (user.username, user.roles, user.user_id, user.api_key_id) == ("alice2", frozenset(), alice["id"], 4)
    # A new user given the old name is someone else: the login of the deleted one fails.
    await users.create({"username": "alice", "password": PASSWORD, "roles": [FULL_ADMIN]})
    await users.delete(alice["id"])
    with pytest.raises(UnauthorizedLogin):
        await realm.requestAvatar(avatar_id, None, IUser)


@pytest_twisted.ensureDeferred
async def test_realm_gives_no_identity_to_a_name_alone(users, alice):
    # A checker that knows only a name gets the roles of that user, but owns nothing.
    _, user, _ = await Realm(users).requestAvatar(AvatarId("alice", LOGIN_PASSWORD), None, IUser)
    assert user.roles == frozenset({READONLY_ADMIN}) and user.user_id is None
    assert user.to_credentials() == {"type": "LOGIN_PASSWORD", "data": {"username": "alice"}}


@pytest_twisted.ensureDeferred
async def test_realm_only_gives_iuser(users):
    with pytest.raises(NotImplementedError):
        await Realm(users).requestAvatar(AvatarId("root", UNIX_SOCKET), None, IPeerCredentials)


@pytest_twisted.ensureDeferred
async def test_user_deleted_between_check_and_realm(users, alice):
    avatar_id = await PasswordChecker(users).requestAvatarId(UsernamePassword("alice", PASSWORD))
    assert avatar_id == AvatarId("alice", LOGIN_PASSWORD, user_id=alice["id"])
    await users.delete(alice["id"])
    with pytest.raises(UnauthorizedLogin):
        await Realm(users).requestAvatar(avatar_id, None, IUser)


# peer credentials


@pytest_twisted.ensureDeferred
async def test_peer_trusted(portal):
    user = await login(portal, PeerCredentials(pid=os.getpid(), uid=os.getuid(), gid=os.getgid()))
    assert user == User("root", frozenset({FULL_ADMIN}), UNIX_SOCKET)
    assert user.is_full_admin and user.local_peer and user.user_id is None
    assert user.to_credentials() == {"type": "UNIX_SOCKET", "data": {"username": "root"}}


@pytest_twisted.ensureDeferred
async def test_peer_root_always_trusted_by_default(users):
    assert default_trusted_uids() == {0, os.getuid()}
    portal = make_portal(users, default_trusted_uids())
    user = await login(portal, PeerCredentials(pid=1, uid=0, gid=0))
    assert user.username == "root"


@pytest_twisted.ensureDeferred
async def test_peer_untrusted(users):
    portal = make_portal(users, {0})
    with pytest.raises(UnauthorizedLogin):
        await login(portal, PeerCredentials(pid=1, uid=54321, gid=54321))
    with pytest.raises(UnauthorizedLogin):
        await PeerCredentialsChecker(set()).requestAvatarId(PeerCredentials(pid=1, uid=0, gid=0))


@pytest_twisted.ensureDeferred
async def test_unhandled_credentials(portal):
    class Other:
        pass

    with pytest.raises(UnhandledCredentials):
        await login(portal, Other())


class HandleTransport:
    """
    The part of a Twisted transport that L{peer_credentials} reads.
    """

    def __init__(self, handle: object) -> None:
        self._handle = handle

    def getHandle(self) -> object:
        return self._handle


def test_peer_credentials_socketpair():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        credentials = peer_credentials(HandleTransport(left))
    assert credentials == PeerCredentials(pid=os.getpid(), uid=os.getuid(), gid=os.getgid())
    assert IPeerCredentials.providedBy(credentials)


def test_peer_credentials_not_unix():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        assert peer_credentials(HandleTransport(tcp)) is None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unconnected:
        assert peer_credentials(HandleTransport(unconnected)) is None
    assert peer_credentials(HandleTransport(3)) is None
    assert peer_credentials(object()) is None


@pytest_twisted.ensureDeferred
async def test_peer_credentials_real_unix_connection(portal):
    accepted: defer.Deferred[protocol.Protocol] = defer.Deferred()

    class Server(protocol.Protocol):
        def connectionMade(self):
            accepted.callback(self)

    directory = tempfile.mkdtemp(prefix="midjobs-auth-")
    path = os.path.join(directory, "s")
    port = await UNIXServerEndpoint(reactor, path).listen(
        protocol.Factory.forProtocol(Server)
    )
    client = await UNIXClientEndpoint(reactor, path).connect(
        protocol.Factory.forProtocol(protocol.Protocol)
    )
    try:
        server = await accepted
        credentials = peer_credentials(server.transport)
        assert credentials == PeerCredentials(pid=os.getpid(), uid=os.getuid(), gid=os.getgid())
        user = await login(portal, credentials)
        assert user.username == "root" and user.credentials_type == UNIX_SOCKET
    finally:
        client.transport.loseConnection()
        server_transport = (await accepted).transport
        server_transport.loseConnection()
        await port.stopListening()
        os.rmdir(directory)
