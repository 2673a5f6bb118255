"""
API keys: the store and checker against a real database file, then logins
with a key over real WebSocket and HTTP connections, and across a restart
of the daemon on the same state directory.
"""

from __future__ import annotations

import errno
import io
import json
import re
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from zope.interface.verify import verifyClass, verifyObject

from midjobs.auth import (
    API_KEY,
    FULL_ADMIN,
    READONLY_ADMIN,
    APIKeyChecker,
    APIKeyCredentials,
    ApiKeyStore,
    IAPIKey,
    User,
    UserStore,
    api_key_store_of,
    login,
    make_portal,
)
from midjobs.auth.api_keys import hash_secret, parse_key, secret_matches
from midjobs.client import Client, ClientConnectionLost, ClientValidationErrors, UploadError, connect, upload
from midjobs.config import Settings
from midjobs.daemon import Daemon
from midjobs.errors import CallError, ValidationErrors
from midjobs.http import _auth as http_auth
from midjobs.store import close_database, ensure_schema, open_database

from conftest import RunningDaemon
from test_midclt import midclt

PASSWORD = "alice-pass"
KEY = re.compile(r"([1-9][0-9]*)-[A-Za-z0-9_-]{64}")


# -- fixtures ----------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def users(pool: Any) -> AsyncIterator[UserStore]:
    store = UserStore(pool)
    await store.setup()
    await store.create({"username": "alice", "password": PASSWORD, "roles": [READONLY_ADMIN]})
    await store.create({"username": "bob", "password": PASSWORD})
    yield store


@pytest_twisted.async_yield_fixture
async def keys(users: UserStore) -> AsyncIterator[ApiKeyStore]:
    store = ApiKeyStore(users.pool)
    await store.setup()
    yield store


@pytest.fixture
def portal(users: UserStore, keys: ApiKeyStore) -> Any:
    return make_portal(users, set(), api_keys=keys)


async def validation_errors(d: defer.Deferred[Any]) -> dict[str, int]:
    """
    The attributes and errnos of the L{ValidationErrors} that C{d} fails with.
    """
    with pytest.raises(ValidationErrors) as info:
        await d
    return {error.attribute: error.errno for error in info.value.errors}


def forgeries(key: str, other_id: int, huge: int = 100_000) -> list[str]:
    """
    Strings that are not C{key} but look more or less like it, the last
    one C{huge} characters longer.
    """
    id_, _, secret = key.partition("-")
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    return [
        "",
        "-",
        secret,
        key.replace("-", ""),
        f"{other_id}-{secret}",
        f"{int(id_) + 1000}-{secret}",
        f"0{key}",
        f"{id_}-{flipped}",
        f"{id_}-{secret[:-1]}",
        f"{key}A",
        f"{key}\n",
        f" {key}",
        f"{id_}-{secret.swapcase()}",
        f"{key[:-1]}é",
        f"{'٣' * len(id_)}-{secret}",
        f"99999999999999999999-{secret}",
        key + "A" * huge,
    ]


# -- keys and their digests --------------------------------------------------


def test_parse_key() -> None:
    secret = "-a" + "Z9" * 30 + "_b"
    assert parse_key(f"12-{secret}") == (12, secret)
    assert parse_key(f"{2**63 - 1}-{secret}") == (2**63 - 1, secret)
    for bad in [
        None, 12, b"12-" + secret.encode(), "", "-", secret, f"12{secret}", f"-12-{secret}",
        f"012-{secret}", f"0-{secret}", f"{2**63}-{secret}", f"٣-{secret}", f"12-{secret}=",
        f"12-{secret[:-1]}", f"12-{secret}b", f"12-{secret[:-1]}é", f"12-{secret}\n", f" 12-{secret}",
        f"12-{secret[:-1]}+", f"12-{secret[:-1]}/", f"12-{secret}" + "A" * 100_000,
    ]:  # fmt: skip
        assert parse_key(bad) is None, bad


def test_secret_digest() -> None:
    secret = "s" * 64
    encoded = hash_secret(secret)
    scheme, salt, digest = encoded.split("$")
    assert scheme == "hmac-sha256" and secret not in encoded
    assert secret_matches(secret, encoded)
    assert not secret_matches("t" * 64, encoded)
    assert hash_secret(secret) != encoded  # salted
    for broken in ["", "hmac-sha256", f"sha1${salt}${digest}", f"hmac-sha256$${digest}",
                   f"hmac-sha256${salt}$!!", f"hmac-sha256${salt}$", f"hmac-sha256$*${digest}"]:  # fmt: skip
        assert not secret_matches(secret, broken), broken


def test_interfaces() -> None:
    assert verifyClass(ICredentialsChecker, APIKeyChecker)
    assert verifyObject(IAPIKey, APIKeyCredentials("k"))
    assert APIKeyCredentials("k").username is None
    assert "s3cr3t" not in repr(APIKeyCredentials("s3cr3t", "alice"))
    # The HTTP layer uses the same credentials.
    assert http_auth.APIKeyCredentials is APIKeyCredentials and http_auth.IAPIKey is IAPIKey


# -- the store ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_shows_the_key_once(keys: ApiKeyStore, pool: Any) -> None:
    created = await keys.create({"name": "backup", "username": "alice"})
    assert set(created) == {"id", "name", "username", "created_at", "key"}
    assert (created["name"], created["username"]) == ("backup", "alice")
    assert created["created_at"].tzinfo is not None
    match = KEY.fullmatch(created["key"])
    assert match and int(match.group(1)) == created["id"]

    shown = {key: value for key, value in created.items() if key != "key"}
    assert await keys.query() == [shown]
    assert await keys.get(created["id"]) == shown
    secret = created["key"].partition("-")[2]
    rows = await pool.runQuery("SELECT * FROM api_keys")
    assert secret not in repr(rows) and created["key"] not in repr(rows)


@pytest_twisted.ensureDeferred
async def test_each_key_is_new(keys: ApiKeyStore) -> None:
    first = await keys.create({"name": "one", "username": "alice"})
    second = await keys.create({"name": "two", "username": "alice"})
    assert first["key"].partition("-")[2] != second["key"].partition("-")[2]
    assert second["id"] > first["id"]


@pytest.mark.parametrize(
    "data, attributes",
    [
        ({}, {"name": errno.EINVAL, "username": errno.EINVAL}),
        ({"name": "x"}, {"username": errno.EINVAL}),
        ({"username": "alice"}, {"name": errno.EINVAL}),
        ({"name": "", "username": "alice"}, {"name": errno.EINVAL}),
        ({"name": "x" * 201, "username": "alice"}, {"name": errno.EINVAL}),
        ({"name": 5, "username": "alice"}, {"name": errno.EINVAL}),
        ({"name": None, "username": "alice"}, {"name": errno.EINVAL}),
        ({"name": "x", "username": 5}, {"username": errno.EINVAL}),
        ({"name": "x", "username": ""}, {"username": errno.EINVAL}),
        ({"name": "x", "username": "nobody"}, {"username": errno.ENOENT}),
        ({"name": "", "username": "nobody"}, {"name": errno.EINVAL, "username": errno.ENOENT}),
        ({"name": "x", "username": "alice", "key": "1-abc"}, {"key": errno.EINVAL}),
        ({"name": "x", "username": "alice", "id": 3}, {"id": errno.EINVAL}),
        (["name", "username"], {"data": errno.EINVAL}),
    ],
)
@pytest_twisted.ensureDeferred
async def test_create_validation(keys: ApiKeyStore, data: Any, attributes: dict[str, int]) -> None:
    assert await validation_errors(keys.create(data)) == attributes
    assert await keys.query() == []


@pytest_twisted.ensureDeferred
async def test_name_unique_per_user(keys: ApiKeyStore) -> None:
    name = "n" * 200
    await keys.create({"name": name, "username": "alice"})
    errors = await validation_errors(keys.create({"name": name, "username": "alice"}))
    assert errors == {"name": errno.EEXIST}
    await keys.create({"name": name, "username": "bob"})
    assert [(k["username"], k["name"]) for k in await keys.query()] == [("alice", name), ("bob", name)]


@pytest.mark.parametrize(
    "message, attributes",
    [
        ("UNIQUE constraint failed: api_keys.user_id, api_keys.name", {"name": errno.EEXIST}),
        ("FOREIGN KEY constraint failed", {"username": errno.ENOENT}),
    ],
)
@pytest_twisted.ensureDeferred
async def test_constraint_failing_under_the_insert(
    keys: ApiKeyStore, pool: Any, message: str, attributes: dict[str, int]
) -> None:
    # As if another process had changed the tables between the checks and the insert.
    await pool.runOperation(
        f"CREATE TEMP TRIGGER refuse BEFORE INSERT ON api_keys BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )
    try:
        assert await validation_errors(keys.create({"name": "k", "username": "alice"})) == attributes
    finally:
        await pool.runOperation("DROP TRIGGER refuse")
    assert await keys.query() == []
    await keys.create({"name": "k", "username": "alice"})


@pytest_twisted.ensureDeferred
async def test_delete(keys: ApiKeyStore, portal: Any) -> None:
    created = await keys.create({"name": "k", "username": "alice"})
    assert await keys.delete(created["id"]) is None
    assert await keys.query() == []
    for gone in (keys.delete(created["id"]), keys.get(created["id"])):
        with pytest.raises(CallError) as info:
            await gone
        assert info.value.errno == errno.ENOENT
    with pytest.raises(UnauthorizedLogin):
        await login(portal, APIKeyCredentials(created["key"]))
    # A deleted key's id is not given again.
    again = await keys.create({"name": "k", "username": "alice"})
    assert again["id"] > created["id"]


@pytest_twisted.ensureDeferred
async def test_deleting_the_user_deletes_their_keys(
    users: UserStore, keys: ApiKeyStore, portal: Any, pool: Any
) -> None:
    alices = await keys.create({"name": "k", "username": "alice"})
    bobs = await keys.create({"name": "k", "username": "bob"})
    alice = await users.get_by_username("alice")
    await users.delete(alice["id"])
    assert [k["id"] for k in await keys.query()] == [bobs["id"]]
    assert await pool.runQuery("SELECT id FROM api_keys") == [(bobs["id"],)]
    with pytest.raises(UnauthorizedLogin):
        await login(portal, APIKeyCredentials(alices["key"]))
    # A new alice does not inherit the old one's keys.
    await users.create({"username": "alice", "password": PASSWORD})
    with pytest.raises(UnauthorizedLogin):
        await login(portal, APIKeyCredentials(alices["key"]))
    assert (await login(portal, APIKeyCredentials(bobs["key"]))).username == "bob"


@pytest_twisted.ensureDeferred
async def test_existing_database_gains_the_table(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    pool = open_database(path)
    old_users = UserStore(pool)
    await old_users.setup()
    await old_users.create({"username": "alice", "password": PASSWORD})
    await close_database(pool)

    pool = open_database(path)
    try:
        users = UserStore(pool)
        assert await users.setup() == 0
        keys = ApiKeyStore(users.pool)
        assert await keys.setup() == 1
        assert await keys.setup() == 0
        created = await keys.create({"name": "k", "username": "alice"})
        user = await login(make_portal(users, set(), api_keys=keys), APIKeyCredentials(created["key"]))
        assert user.username == "alice"
        assert await pool.runQuery("SELECT name, version FROM schema_version ORDER BY name") == [
            ("api_keys", 1),
            ("users", 1),
        ]
    finally:
        await close_database(pool)


@pytest_twisted.ensureDeferred
async def test_keys_survive_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "again.db")
    pool = open_database(path)
    users = UserStore(pool)
    await users.setup()
    await users.create({"username": "alice", "password": PASSWORD})
    await ensure_schema(pool, "unrelated", ["CREATE TABLE t (x)"])
    keys = ApiKeyStore(pool)
    await keys.setup()
    created = await keys.create({"name": "k", "username": "alice"})
    await close_database(pool)

    pool = open_database(path)
    try:
        users, keys = UserStore(pool), ApiKeyStore(pool)
        await users.setup()
        await keys.setup()
        user = await login(make_portal(users, set(), api_keys=keys), APIKeyCredentials(created["key"]))
        assert user.username == "alice"
    finally:
        await close_database(pool)


# -- the portal --------------------------------------------------------------


def test_make_portal_makes_a_key_store(users: UserStore) -> None:
    store = api_key_store_of(make_portal(users, set()))
    assert isinstance(store, ApiKeyStore)
    assert api_key_store_of(object()) is None


@pytest_twisted.ensureDeferred
async def test_login_with_a_key(users: UserStore, keys: ApiKeyStore, portal: Any) -> None:
    created = await keys.create({"name": "ci", "username": "alice"})
    alice_id = (await users.get_by_username("alice"))["id"]
    user = await login(portal, APIKeyCredentials(created["key"]))
    assert IAPIKey.providedBy(APIKeyCredentials(created["key"]))
    api_key = {"id": created["id"], "name": "ci"}
    assert user == User(
        "alice",
        frozenset({READONLY_ADMIN}),
        API_KEY,
        credentials_data={"api_key": api_key},
        user_id=alice_id,
        api_key_id=created["id"],
    )
    assert user.to_credentials() == {
        "type": "API_KEY",
        "data": {"username": "alice", "user_id": alice_id, "api_key": {"id": created["id"], "name": "ci"}},
    }
    assert created["key"] not in repr(user) and created["key"] not in json.dumps(user.to_credentials())
    # The record is a copy: changing it changes nothing in the avatar.
    user.to_credentials()["data"]["api_key"]["name"] = "changed"
    assert user.to_credentials()["data"]["api_key"]["name"] == "ci"

    # The roles are those of the user now, not when the key was made.
    alice = await users.get_by_username("alice")
    await users.update(alice["id"], {"roles": [FULL_ADMIN]})
    assert (await login(portal, APIKeyCredentials(created["key"]))).is_full_admin

    # Naming the user, as API_KEY_PLAIN does.
    assert (await login(portal, APIKeyCredentials(created["key"], "alice"))).username == "alice"
    with pytest.raises(UnauthorizedLogin):
        await login(portal, APIKeyCredentials(created["key"], "bob"))


@pytest_twisted.ensureDeferred
async def test_locked_user_is_refused(users: UserStore, keys: ApiKeyStore, portal: Any) -> None:
    created = await keys.create({"name": "k", "username": "alice"})
    alice = await users.get_by_username("alice")
    await users.update(alice["id"], {"locked": True})
    with pytest.raises(UnauthorizedLogin) as info:
        await login(portal, APIKeyCredentials(created["key"]))
    assert str(info.value) == "Invalid API key"
    await users.update(alice["id"], {"locked": False})
    assert (await login(portal, APIKeyCredentials(created["key"]))).username == "alice"


@pytest_twisted.ensureDeferred
async def test_forged_keys_are_refused(keys: ApiKeyStore, portal: Any) -> None:
    created = await keys.create({"name": "k", "username": "alice"})
    other = await keys.create({"name": "k", "username": "bob"})
    for forged in forgeries(created["key"], other["id"]):
        with pytest.raises(UnauthorizedLogin) as info:
            await login(portal, APIKeyCredentials(forged))
        assert str(info.value) == "Invalid API key"
    assert (await login(portal, APIKeyCredentials(created["key"]))).username == "alice"


# -- over the wire -----------------------------------------------------------


async def make_user(client: Client, username: str, roles: list[str] | None = None) -> dict[str, Any]:
    data = {"username": username, "password": PASSWORD, "roles": roles or [FULL_ADMIN]}
    return await client.call("user.create", data)


async def ws_login(daemon: RunningDaemon, key: str) -> tuple[Client, bool]:
    """
    A new TCP connection, and whether C{auth.login_with_api_key} logged it in.
    """
    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        return client, await client.login_with_api_key(key)
    except BaseException:
        await client.close()
        raise


async def key_works(daemon: RunningDaemon, key: str, username: str | None = None) -> bool:
    """
    Whether C{key} logs a new connection in, by both methods, and both agree.
    """
    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        by_call = await client.call("auth.login_with_api_key", key)
        await client.call("auth.logout")
        request = {"mechanism": "API_KEY_PLAIN", "username": username or "alice", "api_key": key}
        answer = await client.call("auth.login_ex", request)
    finally:
        await client.close()
    assert by_call is (answer["response_type"] == "SUCCESS"), (by_call, answer)
    return by_call


@pytest_twisted.ensureDeferred
async def test_ws_login_with_a_key(daemon: RunningDaemon, admin_client: Client) -> None:
    alice = await make_user(admin_client, "alice")
    created = await admin_client.call("api_key.create", {"name": "ci", "username": "alice"})
    assert KEY.fullmatch(created["key"]) and created["username"] == "alice"
    assert set(created) == {"id", "name", "username", "created_at", "key"}
    expected_credentials = {
        "type": "API_KEY",
        "data": {"username": "alice", "user_id": alice["id"], "api_key": {"id": created["id"], "name": "ci"}},
    }

    # auth.login_with_api_key
    client, ok = await ws_login(daemon, created["key"])
    try:
        assert ok is True
        me = await client.call("auth.me")
        assert me["pw_name"] == "alice" and me["credentials"] == expected_credentials
        assert await client.call_job("core.job_test", {}) is True
        record = await client.call("core.get_jobs", [["method", "=", "core.job_test"]], {"get": True})
        assert record["credentials"] == expected_credentials
        assert created["key"].partition("-")[2] not in json.dumps(record, default=str)
    finally:
        await client.close()

    # auth.login_ex with API_KEY_PLAIN
    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        answer = await client.login_ex({"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": created["key"]})
        assert answer["response_type"] == "SUCCESS"
        assert answer["user_info"]["pw_name"] == "alice"
        assert answer["user_info"]["credentials"] == expected_credentials
        assert answer["user_info"]["privilege"]["roles"] == [FULL_ADMIN]
        assert (await client.call("auth.me"))["credentials"]["type"] == "API_KEY"
    finally:
        await client.close()

    # Never shown again.
    for listed in await admin_client.call("api_key.query"):
        assert set(listed) == {"id", "name", "username", "created_at"}
    shown = await admin_client.call("api_key.query", [["name", "=", "ci"]], {"get": True})
    assert shown == {key: value for key, value in created.items() if key != "key"}
    assert created["key"].partition("-")[2] not in json.dumps(await admin_client.call("api_key.query"), default=str)


@pytest_twisted.ensureDeferred
async def test_ws_api_key_plain_needs_the_keys_user(daemon: RunningDaemon, admin_client: Client) -> None:
    await make_user(admin_client, "alice")
    await make_user(admin_client, "bob")
    created = await admin_client.call("api_key.create", {"name": "k", "username": "alice"})
    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        for username in ("bob", "admin", "nobody", "", "ALICE", "alice "):
            request = {"mechanism": "API_KEY_PLAIN", "username": username, "api_key": created["key"]}
            assert await client.login_ex(request) == {"response_type": "AUTH_ERR"}
        with pytest.raises(CallError) as info:
            await client.call("auth.me")
        assert info.value.errno == 207  # still not logged in
        # A key is not a password, nor a password a key.
        request = {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": created["key"]}
        assert await client.login_ex(request) == {"response_type": "AUTH_ERR"}
        request = {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": PASSWORD}
        assert await client.login_ex(request) == {"response_type": "AUTH_ERR"}
        # API_KEY_PLAIN needs its fields.
        with pytest.raises(ClientValidationErrors) as errors:
            await client.login_ex({"mechanism": "API_KEY_PLAIN", "username": "alice", "password": PASSWORD})
        assert [error.attribute for error in errors.value.errors] == ["login_ex.api_key"]
        assert await client.login_ex({"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": created["key"]})
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_deleted_key_and_user_are_refused(daemon: RunningDaemon, admin_client: Client) -> None:
    alice = await make_user(admin_client, "alice")
    deleted = await admin_client.call("api_key.create", {"name": "deleted", "username": "alice"})
    kept = await admin_client.call("api_key.create", {"name": "kept", "username": "alice"})
    assert await key_works(daemon, deleted["key"]) and await key_works(daemon, kept["key"])

    assert await admin_client.call("api_key.delete", deleted["id"]) is True
    assert not await key_works(daemon, deleted["key"])
    assert await key_works(daemon, kept["key"])
    with pytest.raises(CallError) as info:
        await admin_client.call("api_key.delete", deleted["id"])
    assert info.value.errno == errno.ENOENT

    assert await admin_client.call("user.delete", alice["id"]) is True
    assert await admin_client.call("api_key.query") == []
    assert not await key_works(daemon, kept["key"])


@pytest_twisted.ensureDeferred
async def test_ws_locked_user_is_refused(daemon: RunningDaemon, admin_client: Client) -> None:
    alice = await make_user(admin_client, "alice")
    created = await admin_client.call("api_key.create", {"name": "k", "username": "alice"})
    await admin_client.call("user.update", alice["id"], {"locked": True})
    assert not await key_works(daemon, created["key"])
    await admin_client.call("user.update", alice["id"], {"locked": False})
    assert await key_works(daemon, created["key"])


@pytest_twisted.ensureDeferred
async def test_ws_forged_keys_are_refused(daemon: RunningDaemon, admin_client: Client) -> None:
    await make_user(admin_client, "alice")
    await make_user(admin_client, "bob")
    created = await admin_client.call("api_key.create", {"name": "k", "username": "alice"})
    other = await admin_client.call("api_key.create", {"name": "k", "username": "bob"})
    # Each forgery must be refused by the checker, not by the throttle of failed logins.
    daemon.middleware.logins.throttle.limit = 1000
    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        # Before a login a message may not pass 8 KiB, hence a smaller huge key.
        for forged in forgeries(created["key"], other["id"], huge=7_000):
            assert await client.call("auth.login_with_api_key", forged) is False, forged[:100]
            request = {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": forged}
            assert await client.login_ex(request) == {"response_type": "AUTH_ERR"}, forged[:100]
        with pytest.raises(ClientValidationErrors):
            await client.call("auth.login_with_api_key", 12)
        with pytest.raises(CallError) as info:
            await client.call("auth.me")
        assert info.value.errno == 207
        # The connection is as good as new.
        assert await client.login_with_api_key(created["key"])
    finally:
        await client.close()

    # A bigger one never reaches a checker: the connection is dropped.
    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        with pytest.raises(ClientConnectionLost):
            await client.call("auth.login_with_api_key", created["key"] + "A" * 100_000)
    finally:
        await client.close()
    assert await key_works(daemon, created["key"])


@pytest_twisted.ensureDeferred
async def test_ws_create_validation(daemon: RunningDaemon, admin_client: Client) -> None:
    await make_user(admin_client, "alice")
    await admin_client.call("api_key.create", {"name": "k", "username": "alice"})
    for data, attributes in [
        ({"name": "k", "username": "alice"}, ["name"]),
        ({"name": "x", "username": "nobody"}, ["username"]),
        ({"name": "", "username": "alice"}, ["name"]),
    ]:
        with pytest.raises(ClientValidationErrors) as info:
            await admin_client.call("api_key.create", data)
        assert [error.attribute for error in info.value.errors] == attributes
    assert len(await admin_client.call("api_key.query")) == 1


# -- HTTP --------------------------------------------------------------------


async def curl_upload(daemon: RunningDaemon, file: Path, *args: str) -> tuple[int, Any]:
    """
    POST C{file} to C{core.job_test} with curl; the HTTP status and the JSON body.
    """
    out, err, code = await getProcessOutputAndValue(
        "curl",
        [
            "-sS", "-w", "\n%{http_code}", *args,
            "-F", 'data={"method": "core.job_test", "params": [{}]}', "-F", f"file=@{file}",
            f"{daemon.http_url}/_upload",
        ],  # fmt: skip
        reactor=reactor,
    )
    assert code == 0, err.decode()
    body, _, status = out.decode().rpartition("\n")
    return int(status), json.loads(body) if body else None


@pytest_twisted.ensureDeferred
async def test_http_bearer(daemon: RunningDaemon, admin_client: Client, tmp_path: Path) -> None:
    alice = await make_user(admin_client, "alice")
    await make_user(admin_client, "bob")
    created = await admin_client.call("api_key.create", {"name": "upload", "username": "alice"})
    other = await admin_client.call("api_key.create", {"name": "k", "username": "bob"})
    file = tmp_path / "x"
    file.write_bytes(b"x" * 10_000)

    status, body = await curl_upload(daemon, file, "-H", f"Authorization: Bearer {created['key']}")
    assert status == 200, body
    assert await admin_client.call_job("core.job_wait", body["job_id"]) is True
    record = await admin_client.call("core.get_jobs", [["id", "=", body["job_id"]]], {"get": True})
    assert record["credentials"] == {
        "type": "API_KEY",
        "data": {"username": "alice", "user_id": alice["id"], "api_key": {"id": created["id"], "name": "upload"}},
    }

    daemon.middleware.logins.throttle.limit = 1000  # refused by the checker, not the throttle
    for forged in forgeries(created["key"], other["id"], huge=3_000):
        if not forged or forged != forged.strip():
            continue  # not a header value curl sends as it is
        status, body = await curl_upload(daemon, file, "-H", f"Authorization: Bearer {forged}")
        assert (status, body) == (401, {"error": "Invalid credentials"}), forged

    await admin_client.call("api_key.delete", created["id"])
    status, body = await curl_upload(daemon, file, "-H", f"Authorization: Bearer {created['key']}")
    assert (status, body) == (401, {"error": "Invalid credentials"})
    # Only the one upload with a good key started a job.
    assert len(await admin_client.call("core.get_jobs", [["method", "=", "core.job_test"]])) == 1


@pytest_twisted.ensureDeferred
async def test_treq_helper_and_midclt(daemon: RunningDaemon, admin_client: Client) -> None:
    alice = await make_user(admin_client, "alice")
    created = await admin_client.call("api_key.create", {"name": "tools", "username": "alice"})

    def files() -> list[Any]:
        return [("x.bin", io.BytesIO(b"x" * 1000))]

    result = await upload(
        daemon.http_url, "core.job_test", [{}], files(), api_key=created["key"], reactor=reactor, wait=admin_client
    )
    assert result is True
    with pytest.raises(UploadError) as info:
        await upload(daemon.http_url, "core.job_test", [{}], files(), api_key=created["key"][:-1], reactor=reactor)
    assert "401" in str(info.value)

    out, err, code = await midclt("-u", daemon.ws_url, "-K", created["key"], "call", "auth.me")
    assert code == 0, err
    assert json.loads(out)["credentials"]["data"] == {
        "username": "alice",
        "user_id": alice["id"],
        "api_key": {"id": created["id"], "name": "tools"},
    }
    out, err, code = await midclt("-u", daemon.ws_url, "-K", created["key"][:-1], "call", "auth.me")
    assert code != 0 and created["key"] not in err


# -- restart -----------------------------------------------------------------


async def started(settings: Settings) -> Daemon:
    daemon = Daemon(settings, reactor)
    daemon.startService()
    await daemon.ready
    return daemon


@pytest_twisted.ensureDeferred
async def test_key_survives_a_restart(settings: Settings) -> None:
    """
    A key made before the daemon stops logs in to the next daemon on the
    same state directory (a daemon of its own, in this process: what a
    restart keeps is in the database, not in the process).
    """
    first = await started(settings)
    try:
        local = await connect(f"ws+unix://{settings.socket_path}", reactor=reactor, call_timeout=30)
        try:
            await make_user(local, "alice")
            created = await local.call("api_key.create", {"name": "k", "username": "alice"})
        finally:
            await local.close()
    finally:
        await first.stopService()

    second = await started(settings)
    try:
        port = second.listeners[0].port.getHost().port
        client = await connect(f"ws://127.0.0.1:{port}/api/current", reactor=reactor, call_timeout=30)
        try:
            assert await client.login_with_api_key(created["key"])
            assert (await client.call("auth.me"))["credentials"]["data"]["api_key"]["id"] == created["id"]
            listed = await client.call("api_key.query")
            assert listed == [{key: value for key, value in created.items() if key != "key"}]
        finally:
            await client.close()
    finally:
        await second.stopService()
