"""
The web page's sessions (C{/_session}, L{midjobs.auth.web_sessions}): a
cookie that is no password, traded for single-use WebSocket tokens, kept
across a restart, refused to other sites, ended by logout and by deleting or
locking its user or deleting its API key.

Over HTTP against a daemon in this process; expiry against the store with a
L{task.Clock}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, AsyncIterator

import attrs
import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.internet.utils import getProcessOutputAndValue

from midjobs.auth.api_keys import ApiKeyStore
from midjobs.auth.users import UserStore
from midjobs.auth.web_sessions import MAX_SESSIONS_PER_USER, WebSessionStore
from midjobs.client import connect
from midjobs.config import Settings
from midjobs.daemon import Daemon
from midjobs.store.pg import PgDatabase

from conftest import USER, RunningDaemon
from test_tls import make_pki

pytest_plugins = ["postgres_server"]

XHR = {"X-Requested-With": ["midjobs"]}


async def start(settings: Settings) -> RunningDaemon:
    service = Daemon(settings, reactor)
    service.startService()
    await service.ready
    port = service.listeners[0].port.getHost().port
    return RunningDaemon(service, Path(settings.state_dir), settings.socket_path, port)


@pytest_twisted.async_yield_fixture
async def alice(daemon: RunningDaemon) -> AsyncIterator[dict[str, Any]]:
    yield await daemon.middleware.users.create({"username": USER[0], "password": USER[1], "roles": []})


@attrs.frozen
class Answer:
    code: int
    body: dict[str, Any]
    set_cookie: list[str]


#: What C{/_session/token} answers without a live session.
NO_SESSION = Answer(200, {"token": None}, [])


def basic(username: str, password: str) -> list[str]:
    return ["Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()]


async def post(daemon: RunningDaemon, path: str, *, method: str = "POST", **headers: Any) -> Answer:
    all_headers = {**XHR, **headers}
    response = await treq.request(
        method, f"{daemon.http_url}{path}", headers={k: v for k, v in all_headers.items() if v is not None}
    )
    text = await response.text()
    return Answer(response.code, json.loads(text) if text else {}, response.headers.getRawHeaders("Set-Cookie", []))


async def log_in(daemon: RunningDaemon, username: str = USER[0], password: str = USER[1]) -> str:
    """
    The session secret of a login (the cookie's value).
    """
    answer = await post(daemon, "/_session", Authorization=basic(username, password))
    assert answer.code == 200, answer
    assert answer.body == {"username": username}
    cookie = SimpleCookie(answer.set_cookie[0])
    return cookie["midjobs_session"].value


def cookie(secret: str) -> list[str]:
    return [f"midjobs_session={secret}"]


async def exchange(daemon: RunningDaemon, secret: str, **headers: Any) -> Answer:
    return await post(daemon, "/_session/token", Cookie=cookie(secret), **headers)


async def ws_login(daemon: RunningDaemon, token: str) -> str | None:
    """
    Who a WebSocket logged in with C{token} is, or None if the token failed.
    """
    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        if not await client.call("auth.login_with_token", token):
            return None
        me = await client.call("auth.me")
        return str(me["pw_name"])
    finally:
        await client.close()


def rows(state_dir: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(state_dir / "midjobs.db") as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'web_sessions'").fetchall():
            return []  # made on first use
        return db.execute("SELECT secret_hash, user_id, api_key_id FROM web_sessions").fetchall()


@pytest_twisted.ensureDeferred
async def test_login_sets_an_http_only_strict_cookie(daemon: RunningDaemon, alice: dict[str, Any]) -> None:
    answer = await post(daemon, "/_session", Authorization=basic(*USER))
    assert answer.code == 200 and answer.body == {"username": "alice"}
    (header,) = answer.set_cookie
    attributes = [part.strip().lower() for part in header.split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
    # Plain HTTP: a Secure cookie would never come back.
    assert "secure" not in attributes
    secret = SimpleCookie(header)["midjobs_session"].value
    assert len(secret) >= 43 and USER[1] not in header
    # The database keeps its digest only.
    assert rows(daemon.state_dir) == [(hashlib.sha256(secret.encode()).hexdigest(), alice["id"], None)]


@pytest_twisted.ensureDeferred
async def test_over_tls_the_cookie_is_secure(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    tls = attrs.evolve(
        settings,
        listen=("ssl:0:interface=127.0.0.1",),
        tls_certificate=str(pki.certificate),
        tls_private_key=str(pki.private_key),
    )
    daemon = await start(tls)
    try:
        await daemon.middleware.users.create({"username": USER[0], "password": USER[1], "roles": []})
        out, err, code = await getProcessOutputAndValue(
            "curl",
            # Over TLS, where curl speaks HTTP/2: the cookie is Secure.
            ["-sS", "-i", "--data", "", "--cacert", str(pki.ca), "-H", "X-Requested-With: curl",
             "-u", ":".join(USER), f"https://127.0.0.1:{daemon.port}/_session"],
            reactor=reactor,
        )  # fmt: skip
        assert code == 0, err
        (header,) = [line for line in out.decode().splitlines() if line.lower().startswith("set-cookie:")]
        attributes = [part.strip().lower() for part in header.split(":", 1)[1].split(";")]
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= set(attributes)
    finally:
        await daemon.daemon.stopService()


@pytest_twisted.ensureDeferred
async def test_the_cookie_is_traded_for_single_use_login_tokens(daemon: RunningDaemon, alice: dict[str, Any]) -> None:
    secret = await log_in(daemon)
    first, second = await exchange(daemon, secret), await exchange(daemon, secret)
    assert first.code == second.code == 200
    assert first.body["username"] == "alice" and first.body["token"] != second.body["token"]
    assert await ws_login(daemon, first.body["token"]) == "alice"
    # Used once: a second use fails.
    assert await ws_login(daemon, first.body["token"]) is None
    assert await ws_login(daemon, second.body["token"]) == "alice"


@pytest_twisted.ensureDeferred
async def test_a_logged_in_websocket_starts_a_session_with_a_token(
    daemon: RunningDaemon, alice: dict[str, Any]
) -> None:
    # The page's way: the password goes over the WebSocket, a token to /_session.
    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        assert await client.login(*USER)
        token = await client.call("auth.generate_token", 60, {}, True, True)
    finally:
        await client.close()
    answer = await post(daemon, "/_session", Authorization=[f"Token {token}"])
    assert answer.code == 200 and answer.body == {"username": "alice"}
    secret = SimpleCookie(answer.set_cookie[0])["midjobs_session"].value
    assert (await exchange(daemon, secret)).body["username"] == "alice"
    # Single use: the token made one session.
    assert (await post(daemon, "/_session", Authorization=[f"Token {token}"])).code == 401


@pytest_twisted.ensureDeferred
async def test_bad_logins_make_no_session(daemon: RunningDaemon, alice: dict[str, Any]) -> None:
    wrong = await post(daemon, "/_session", Authorization=basic("alice", "wrong"))
    assert (wrong.code, wrong.set_cookie) == (401, [])
    # No browser prompt for a password.
    unnamed = await treq.post(f"{daemon.http_url}/_session", headers=XHR)
    assert unnamed.headers.getRawHeaders("WWW-Authenticate") is None
    assert (await post(daemon, "/_session")).code == 400
    assert (await post(daemon, "/_session", Authorization=["Basic !!"])).code == 400
    assert (await post(daemon, "/_session", Authorization=["Token not-a-token"])).code == 401
    assert (await post(daemon, "/_session", Authorization=["Digest x"])).code == 400
    assert rows(daemon.state_dir) == []


@pytest_twisted.ensureDeferred
async def test_requests_from_other_sites_are_refused(daemon: RunningDaemon, alice: dict[str, Any]) -> None:
    login = basic(*USER)
    # A cross-site form cannot set X-Requested-With.
    no_header = await post(daemon, "/_session", Authorization=login, **{"X-Requested-With": None})
    assert (no_header.code, no_header.set_cookie) == (403, [])
    evil = {"Origin": ["http://evil.example"]}
    assert (await post(daemon, "/_session", Authorization=login, **evil)).code == 403
    secret = await log_in(daemon)
    assert (await exchange(daemon, secret, **{"X-Requested-With": None})).code == 403
    refused = await exchange(daemon, secret, **evil)
    assert refused.code == 403 and "token" not in refused.body
    assert (await post(daemon, "/_session", method="DELETE", Cookie=cookie(secret), **evil)).code == 403
    # The daemon's own origin is fine, and the session is still there.
    own = {"Origin": [daemon.http_url]}
    assert (await exchange(daemon, secret, **own)).code == 200
    assert await post(daemon, "/_session/token") == NO_SESSION
    assert await exchange(daemon, "not-a-session") == NO_SESSION


@pytest_twisted.ensureDeferred
async def test_logout_ends_the_session_for_every_tab(daemon: RunningDaemon, alice: dict[str, Any]) -> None:
    secret = await log_in(daemon)
    other = await log_in(daemon)
    answer = await post(daemon, "/_session", method="DELETE", Cookie=cookie(secret))
    assert answer.code == 200 and answer.body == {"ended": True}
    cleared = SimpleCookie(answer.set_cookie[0])["midjobs_session"]
    assert cleared.value == "" and cleared["max-age"] == "0"
    # Every tab shares the cookie: none can trade it any more.
    assert await exchange(daemon, secret) == NO_SESSION
    # Another login (another browser) is another session; the browsers' way out ends it.
    assert (await exchange(daemon, other)).code == 200
    answer = await post(daemon, "/_session/logout", Cookie=cookie(other))
    assert answer.code == 200 and answer.body == {"ended": True}
    assert await exchange(daemon, other) == NO_SESSION


@pytest_twisted.ensureDeferred
async def test_a_session_survives_a_restart(settings: Settings) -> None:
    daemon = await start(settings)
    try:
        await daemon.middleware.users.create({"username": USER[0], "password": USER[1], "roles": []})
        secret = await log_in(daemon)
    finally:
        await daemon.daemon.stopService()
    daemon = await start(settings)
    try:
        token = await exchange(daemon, secret)
        assert token.code == 200
        assert await ws_login(daemon, token.body["token"]) == "alice"
    finally:
        await daemon.daemon.stopService()


@pytest_twisted.ensureDeferred
async def test_deleting_or_locking_the_user_ends_its_sessions(
    daemon: RunningDaemon, admin_client: Any, alice: dict[str, Any]
) -> None:
    bob = await admin_client.call("user.create", {"username": "bob", "password": "bob-pass", "roles": []})
    alices, bobs = await log_in(daemon), await log_in(daemon, "bob", "bob-pass")
    await admin_client.call("user.update", alice["id"], {"locked": True})
    # Unlocked before the session was used again: it stays ended.
    await admin_client.call("user.update", alice["id"], {"locked": False})
    assert await exchange(daemon, alices) == NO_SESSION
    locked_later = await log_in(daemon)
    await admin_client.call("user.update", alice["id"], {"locked": True})
    assert await exchange(daemon, locked_later) == NO_SESSION
    assert (await exchange(daemon, bobs)).code == 200
    await admin_client.call("user.delete", bob["id"])
    assert await exchange(daemon, bobs) == NO_SESSION
    assert rows(daemon.state_dir) == []


@pytest_twisted.ensureDeferred
async def test_deleting_the_api_key_ends_its_sessions(
    daemon: RunningDaemon, admin_client: Any, alice: dict[str, Any]
) -> None:
    key = await admin_client.call("api_key.create", {"name": "web", "username": "alice"})
    answer = await post(daemon, "/_session", Authorization=[f"Bearer {key['key']}"])
    assert answer.code == 200 and answer.body == {"username": "alice"}
    secret = SimpleCookie(answer.set_cookie[0])["midjobs_session"].value
    password = await log_in(daemon)
    assert (await exchange(daemon, secret)).code == 200
    await admin_client.call("api_key.delete", key["id"])
    assert await exchange(daemon, secret) == NO_SESSION
    # The login by password is another session, untouched.
    assert (await exchange(daemon, password)).code == 200


@pytest_twisted.async_yield_fixture
async def sessions(pool: Any) -> AsyncIterator[tuple[WebSessionStore, task.Clock, int]]:
    users = UserStore(pool)
    await users.setup()
    user = await users.create({"username": "alice", "password": USER[1], "roles": []})
    clock = task.Clock()
    clock.advance(1_000_000)
    yield WebSessionStore(pool, clock, lifetime=100, idle_timeout=10), clock, user["id"]


@pytest_twisted.ensureDeferred
async def test_a_session_ends_after_its_idle_timeout(sessions: tuple[WebSessionStore, task.Clock, int]) -> None:
    store, clock, user_id = sessions
    secret = await store.create(user_id)
    for _ in range(3):
        clock.advance(9)
        found = await store.use(secret)
        assert found is not None and found.user_id == user_id
    clock.advance(10)
    assert await store.use(secret) is None
    # Ended for good.
    clock.advance(-5)
    assert await store.use(secret) is None


@pytest_twisted.ensureDeferred
async def test_a_session_ends_after_its_lifetime_however_used(
    sessions: tuple[WebSessionStore, task.Clock, int],
) -> None:
    store, clock, user_id = sessions
    secret = await store.create(user_id)
    for _ in range(11):
        assert await store.use(secret) is not None
        clock.advance(9)
    # 99 s used every 9 s: one more second and its life is over.
    assert await store.use(secret) is not None
    clock.advance(1)
    assert await store.use(secret) is None


@pytest_twisted.ensureDeferred
async def test_a_user_holds_a_bounded_number_of_sessions(sessions: tuple[WebSessionStore, task.Clock, int]) -> None:
    store, clock, user_id = sessions
    first = await store.create(user_id)
    for _ in range(MAX_SESSIONS_PER_USER):
        clock.advance(0.01)
        await store.create(user_id)
    # The least recently used went.
    assert await store.use(first) is None
    assert await store.end_of_user(user_id) == MAX_SESSIONS_PER_USER


@pytest_twisted.async_yield_fixture
async def two_databases(postgres_database: str) -> AsyncIterator[tuple[PgDatabase, PgDatabase]]:
    """
    Two nodes' connections to one PostgreSQL database.
    """
    one, other = (PgDatabase(postgres_database, reactor, size=2) for _ in range(2))
    await one.open()
    await other.open()
    try:
        yield one, other
    finally:
        await one.close()
        await other.close()


def far_clock() -> task.Clock:
    """
    A clock the sessions expire by, far from the epoch.
    """
    clock = task.Clock()
    clock.advance(1_000_000)
    return clock


@pytest_twisted.ensureDeferred
async def test_the_nodes_of_a_cluster_share_the_sessions(two_databases: tuple[PgDatabase, PgDatabase]) -> None:
    """
    On PostgreSQL, a session made through one node is good on another, and
    goes with its API key and its user there too.
    """
    one, other = two_databases
    clock = far_clock()
    here = WebSessionStore(one, clock, lifetime=100, idle_timeout=10)
    there = WebSessionStore(other, clock, lifetime=100, idle_timeout=10)
    # The schema is made at the first use, on either node.
    assert await there.use("nobody") is None
    users = UserStore(one)
    user = await users.create({"username": "alice", "password": USER[1], "roles": []})
    key = await ApiKeyStore(one).create({"name": "web", "username": "alice"})
    by_password, by_key = await here.create(user["id"]), await here.create(user["id"], key["id"])
    found = await there.use(by_key)
    assert found is not None and (found.user_id, found.api_key_id) == (user["id"], key["id"])
    await ApiKeyStore(other).delete(key["id"])
    assert await there.use(by_key) is None
    assert await there.use(by_password) is not None
    clock.advance(10)
    assert await here.use(by_password) is None
    again = await there.create(user["id"])
    await users.delete(user["id"])
    assert await here.use(again) is None
