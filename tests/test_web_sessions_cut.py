"""
When a web session ends, the daemon logs out every WebSocket that logged in
through it (with a token traded for its cookie, or a token made from such a
login): at its logout, when its expiry is noticed, when it is evicted, when
its user is locked or its API key deleted.  The connection is logged out as a
deleted user's is: its next call fails with C{ENOTAUTHENTICATED}, the
connection stays open and may log in again.  Connections of another session
of the same user, and password logins, stay.

A session that a live connection logged in through does not go idle (the
keep-alive); one past its time is not revived.

End to end against a daemon in this process over real sockets; the
sessions' clock is swapped for a L{task.Clock} where time must pass.  The
store's report of the sessions it ends, and its keep-alive, are tested
against the store with a L{task.Clock}, on SQLite and on the private
PostgreSQL.
"""

from __future__ import annotations

import time
from http.cookies import SimpleCookie
from typing import Any, AsyncIterator

import pytest_twisted
from twisted.internet import reactor, task

from midjobs.auth.users import UserStore
from midjobs.auth.web_sessions import MAX_SESSIONS_PER_USER, WebSessionKeepAlive, WebSessionStore
from midjobs.client import Client, ClientCallError, connect
from midjobs.errors import ENOTAUTHENTICATED
from midjobs.store.pg import PgDatabase

from conftest import USER, RunningDaemon
from test_web_sessions import (  # noqa: F401 (alice and two_databases are fixtures)
    NO_SESSION,
    alice,
    cookie,
    exchange,
    far_clock,
    log_in,
    post,
    two_databases,
)

pytest_plugins = ["postgres_server"]


async def tab(daemon: RunningDaemon, connections: list[Client], secret: str) -> Client:
    """
    A WebSocket logged in as the page logs one in: with a token traded for
    the session's cookie.
    """
    answer = await exchange(daemon, secret)
    assert answer.code == 200 and answer.body["token"], answer
    client: Client = await connect(daemon.ws_url, reactor=reactor)
    connections.append(client)
    assert await client.call("auth.login_with_token", answer.body["token"]) is True
    return client


async def by_password(daemon: RunningDaemon, connections: list[Client]) -> Client:
    client: Client = await connect(daemon.ws_url, reactor=reactor)
    connections.append(client)
    assert await client.login(*USER)
    return client


async def who(client: Client) -> str | int:
    """
    Who C{client} is logged in as, or the errno its call gets.
    """
    try:
        me = await client.call("auth.me")
    except ClientCallError as error:
        return error.errno
    return str(me["pw_name"])


async def fresh_login(daemon: RunningDaemon, connections: list[Client], token: str) -> bool:
    client: Client = await connect(daemon.ws_url, reactor=reactor)
    connections.append(client)
    return bool(await client.call("auth.login_with_token", token))


def sessions_clock(daemon: RunningDaemon) -> task.Clock:
    """
    A clock the daemon's web sessions now go by, at the present time.
    """
    clock = task.Clock()
    clock.advance(time.time())
    daemon.middleware.web_sessions.clock = clock
    return clock


@pytest_twisted.ensureDeferred
async def test_logout_cuts_every_connection_of_the_session(
    daemon: RunningDaemon, connections: list[Client], alice: dict[str, Any]  # noqa: F811
) -> None:
    secret, other_secret = await log_in(daemon), await log_in(daemon)
    first, second = await tab(daemon, connections, secret), await tab(daemon, connections, secret)
    other_session = await tab(daemon, connections, other_secret)
    password = await by_password(daemon, connections)
    # A token the tab made (a transfer's, say), and one traded and not used yet.
    made = await first.call("auth.generate_token", 600)
    unused = (await exchange(daemon, secret)).body["token"]

    answer = await post(daemon, "/_session/logout", Cookie=cookie(secret))
    assert answer.code == 200 and answer.body == {"ended": True}

    # Cut by the time the logout is answered: as a deleted user's connections are.
    assert await who(first) == await who(second) == ENOTAUTHENTICATED
    assert await who(other_session) == await who(password) == "alice"
    assert not await fresh_login(daemon, connections, made)
    assert not await fresh_login(daemon, connections, unused)
    # The connection is still open, and may log in again.
    assert await first.login(*USER)
    assert await who(first) == "alice"


@pytest_twisted.ensureDeferred
async def test_a_login_made_from_a_session_token_goes_with_the_session(
    daemon: RunningDaemon, connections: list[Client], alice: dict[str, Any]  # noqa: F811
) -> None:
    secret = await log_in(daemon)
    first = await tab(daemon, connections, secret)
    # A connection logged in with a token the tab made derives from the session too.
    derived: Client = await connect(daemon.ws_url, reactor=reactor)
    connections.append(derived)
    assert await derived.call("auth.login_with_token", await first.call("auth.generate_token", 600))
    await post(daemon, "/_session", method="DELETE", Cookie=cookie(secret))
    assert await who(derived) == ENOTAUTHENTICATED


@pytest_twisted.ensureDeferred
async def test_an_idle_session_cuts_its_connections_when_its_end_is_noticed(
    daemon: RunningDaemon, connections: list[Client], alice: dict[str, Any]  # noqa: F811
) -> None:
    clock = sessions_clock(daemon)
    idle_timeout = daemon.middleware.web_sessions.idle_timeout
    idle, used = await log_in(daemon), await log_in(daemon)
    first, stays = await tab(daemon, connections, idle), await tab(daemon, connections, used)
    clock.advance(idle_timeout - 1)
    await tab(daemon, connections, used)
    # Its tab's connection did not keep it alive (the keep-alive did not run: a
    # node cut from the database, say; see the tests of the keep-alive below).
    clock.advance(1)
    # Nobody noticed yet: nothing is scheduled.
    assert await who(first) == "alice"
    # A new tab of that browser notices.
    assert await exchange(daemon, idle) == NO_SESSION
    assert await who(first) == ENOTAUTHENTICATED
    assert await who(stays) == "alice"


@pytest_twisted.ensureDeferred
async def test_sessions_past_their_time_cut_their_connections_when_a_login_prunes_them(
    daemon: RunningDaemon, connections: list[Client], alice: dict[str, Any]  # noqa: F811
) -> None:
    clock = sessions_clock(daemon)
    secret = await log_in(daemon)
    first = await tab(daemon, connections, secret)
    clock.advance(daemon.middleware.web_sessions.lifetime)
    # Anyone's login deletes the sessions past their time.
    await daemon.middleware.users.create({"username": "bob", "password": "bob-pass", "roles": []})
    await log_in(daemon, "bob", "bob-pass")
    assert await who(first) == ENOTAUTHENTICATED


@pytest_twisted.ensureDeferred
async def test_locking_the_user_or_deleting_the_api_key_cuts_the_sessions_connections(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client], alice: dict[str, Any]  # noqa: F811
) -> None:
    key = await admin_client.call("api_key.create", {"name": "web", "username": "alice"})
    answer = await post(daemon, "/_session", Authorization=[f"Bearer {key['key']}"])
    by_key = await tab(daemon, connections, SimpleCookie(answer.set_cookie[0])["midjobs_session"].value)
    by_password_session = await tab(daemon, connections, await log_in(daemon))
    await admin_client.call("api_key.delete", key["id"])
    assert await who(by_key) == ENOTAUTHENTICATED
    assert await who(by_password_session) == "alice"
    await admin_client.call("user.update", alice["id"], {"locked": True})
    assert await who(by_password_session) == ENOTAUTHENTICATED


# The store's report of the sessions it ends.


@pytest_twisted.async_yield_fixture
async def reporting(pool: Any) -> AsyncIterator[tuple[WebSessionStore, task.Clock, int, list[int]]]:
    users = UserStore(pool)
    await users.setup()
    user = await users.create({"username": "alice", "password": USER[1], "roles": []})
    clock = task.Clock()
    clock.advance(1_000_000)
    ended: list[int] = []
    store = WebSessionStore(pool, clock, lifetime=100, idle_timeout=10, ended=ended.extend)
    yield store, clock, user["id"], ended


async def session_id(store: WebSessionStore, secret: str) -> int:
    found = await store.use(secret)
    assert found is not None
    return found.id


@pytest_twisted.ensureDeferred
async def test_the_store_tells_which_sessions_it_ends(
    reporting: tuple[WebSessionStore, task.Clock, int, list[int]],
) -> None:
    store, clock, user_id, ended = reporting
    logged_out, idle, pruned = [await store.create(user_id) for _ in range(3)]
    ids = [await session_id(store, secret) for secret in (logged_out, idle, pruned)]
    assert ended == []
    assert await store.end(logged_out) is True
    assert ended == [ids[0]]
    assert await store.end(logged_out) is False
    assert ended == [ids[0]]
    clock.advance(10)
    assert await store.use(idle) is None
    assert ended == ids[:2]
    # The third, past its idle time too, goes at the next login.
    newest = await store.create(user_id)
    assert ended == ids
    newest_id = await session_id(store, newest)
    assert await store.end_of_user(user_id) == 1
    assert ended == [*ids, newest_id]


@pytest_twisted.ensureDeferred
async def test_the_store_tells_of_a_session_evicted_past_the_limit(
    reporting: tuple[WebSessionStore, task.Clock, int, list[int]],
) -> None:
    store, clock, user_id, ended = reporting
    first = await store.create(user_id)
    first_id = await session_id(store, first)
    for _ in range(MAX_SESSIONS_PER_USER):
        clock.advance(0.01)
        await store.create(user_id)
    assert ended == [first_id]


# A session in use by a live connection does not go idle.


@pytest_twisted.ensureDeferred
async def test_a_session_a_live_connection_uses_does_not_go_idle(
    daemon: RunningDaemon, connections: list[Client], alice: dict[str, Any]  # noqa: F811
) -> None:
    clock = sessions_clock(daemon)
    idle_timeout = daemon.middleware.web_sessions.idle_timeout
    keep_alive = daemon.middleware.web_session_keep_alive
    open_tab, closed_tab = await log_in(daemon), await log_in(daemon)
    stays = await tab(daemon, connections, open_tab)
    goes = await tab(daemon, connections, closed_tab)
    await goes.close()
    for _ in range(3):
        clock.advance(idle_timeout - 1)
        await keep_alive.tell()
    clock.advance(1)
    assert (await exchange(daemon, open_tab)).code == 200 and await who(stays) == "alice"
    assert await exchange(daemon, closed_tab) == NO_SESSION


@pytest_twisted.ensureDeferred
async def test_keeping_alive_revives_no_session_past_its_time(
    reporting: tuple[WebSessionStore, task.Clock, int, list[int]],
) -> None:
    store, clock, user_id, ended = reporting
    idle, old = await store.create(user_id), await store.create(user_id)
    ids = [await session_id(store, secret) for secret in (idle, old)]
    clock.advance(9)
    await store.keep_alive(ids[1:])
    clock.advance(1)
    await store.keep_alive(ids)
    # Past its idle time when told: it stays ended.
    assert await store.use(idle) is None
    for _ in range(10):
        clock.advance(9)
        await store.keep_alive(ids[1:])
    # Kept alive, yet past its lifetime.
    assert await store.use(old) is None
    assert ended == ids


def test_the_keep_alive_tells_four_times_per_idle_timeout(
    reporting: tuple[WebSessionStore, task.Clock, int, list[int]],
) -> None:
    store, _, _, _ = reporting
    told: list[set[int]] = []

    class Store:
        idle_timeout = store.idle_timeout

        async def keep_alive(self, ids: set[int]) -> None:
            told.append(ids)

    clock = task.Clock()
    in_use = {3, 4}
    keep_alive = WebSessionKeepAlive(Store(), lambda: iter(in_use), clock)  # type: ignore[arg-type]  # a store in memory
    keep_alive.start()
    clock.advance(2.4)
    assert told == []
    clock.advance(0.1)
    in_use.discard(4)
    clock.advance(2.5)
    assert told == [{3, 4}, {3}]
    keep_alive.stop()
    clock.advance(10)
    assert len(told) == 2 and clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_on_postgresql_a_node_keeps_alive_and_reports_the_ends(
    two_databases: tuple[PgDatabase, PgDatabase],  # noqa: F811
) -> None:
    one, other = two_databases
    clock = far_clock()
    ended_here: list[int] = []
    ended_there: list[int] = []
    here = WebSessionStore(one, clock, lifetime=100, idle_timeout=10, ended=ended_here.extend)
    there = WebSessionStore(other, clock, lifetime=100, idle_timeout=10, ended=ended_there.extend)
    assert await there.use("nobody") is None
    user = await UserStore(one).create({"username": "alice", "password": USER[1], "roles": []})
    kept, idle = await here.create(user["id"]), await here.create(user["id"])
    ids = [await session_id(here, secret) for secret in (kept, idle)]
    clock.advance(9)
    await there.keep_alive({ids[0], 12345})
    clock.advance(9)
    assert await there.use(kept) is not None
    assert await there.use(idle) is None
    assert (ended_here, ended_there) == ([], [ids[1]])
    assert await here.end(kept) is True
    assert (ended_here, ended_there) == ([ids[0]], [ids[1]])
