"""
Who may do what, over real connections: roles decide the calls, jobs belong
to the credentials that started them (in lists, events, aborts, waits, logs),
secrets stay out of records, a changed user's sessions change at once, and
failed logins are throttled.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Any, AsyncIterator

import attrs
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue

from conftest import RunningDaemon
from midjobs.arguments import REDACTED
from midjobs.client import ClientCallError, connect
from midjobs.config import Settings
from midjobs.errors import ENOTAUTHENTICATED

USERS = {
    "alice": ["RUNNER"],
    "bob": ["RUNNER"],
    "carol": ["READONLY_ADMIN"],
    "dave": ["AUDITOR"],
}


def password_of(username: str) -> str:
    return f"{username}-secret-pass"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, plugins=(*settings.plugins, "access_services"))


@pytest_twisted.async_yield_fixture
async def clients(daemon: RunningDaemon, admin_client: Any) -> AsyncIterator[dict[str, Any]]:
    """
    A logged-in client for the admin and for each of L{USERS}.
    """
    connected = {"admin": admin_client}
    for username, roles in USERS.items():
        await admin_client.call("user.create", {"username": username, "password": password_of(username), "roles": roles})
        client = await connect(daemon.ws_url, reactor=reactor)
        assert await client.login(username, password_of(username))
        connected[username] = client
    yield connected
    for username in USERS:
        await connected[username].close()


async def refused(call: Deferred[Any], code: int) -> ClientCallError:
    with pytest.raises(ClientCallError) as info:
        await call
    assert info.value.errno == code, info.value
    return info.value


async def job_ids(client: Any, *filters: Any) -> set[int]:
    return {job["id"] for job in await client.call("core.get_jobs", list(filters))}


# Roles and methods.


@pytest_twisted.ensureDeferred
async def test_roles_decide_who_calls_what(clients: dict[str, Any]) -> None:
    alice, carol, dave = clients["alice"], clients["carol"], clients["dave"]
    assert await alice.call("access.whoami") == {"username": "alice", "roles": ["RUNNER"]}
    error = await refused(alice.call("access.release", "x"), errno.EACCES)
    assert error.reason == "Not authorized"
    await refused(alice.call("user.create", {"username": "mallory", "password": "pw-mallory"}), errno.EACCES)
    await refused(alice.call("access.peek"), errno.EACCES)
    await refused(alice.call("core.job_test"), errno.EACCES)

    assert await carol.call("access.peek") == "peeked"
    assert [user["username"] for user in await carol.call("user.query")] == ["admin", *USERS]
    await refused(carol.call("user.delete", 1), errno.EACCES)
    await refused(carol.call("access.hold", "c"), errno.EACCES)

    await refused(dave.call("access.hold", "d"), errno.EACCES)
    assert (await dave.call("access.whoami"))["username"] == "dave"
    # Nothing they tried ran.
    assert await job_ids(clients["admin"]) == set()


@pytest_twisted.ensureDeferred
async def test_get_methods_shows_roles(clients: dict[str, Any]) -> None:
    methods = await clients["alice"].call("core.get_methods")
    assert methods["access.hold"]["roles"] == ["RUNNER"]
    assert methods["filesystem.put"]["roles"] == ["FILESYSTEM_WRITE"]
    assert methods["filesystem.get"]["roles"] == ["FILESYSTEM_READ"]
    assert methods["filesystem.get"]["read_only"] is True
    assert methods["user.create"]["roles"] == []
    assert methods["core.get_jobs"]["no_authz_required"] is True


@pytest_twisted.ensureDeferred
async def test_upload_without_the_role_is_403(daemon: RunningDaemon, clients: dict[str, Any]) -> None:
    out, err, code = await getProcessOutputAndValue(
        "curl",
        [
            "-sS", "-w", "\n%{http_code}", "-u", f"alice:{password_of('alice')}",
            "-F", 'data={"method": "filesystem.put", "params": ["/tmp/x"]}',
            "-F", "file=@/dev/null",
            f"{daemon.http_url}/_upload",
        ],
        reactor=reactor,
    )
    assert code == 0, err
    assert out.decode().rsplit("\n", 1)[1] == "403"
    assert await job_ids(clients["admin"]) == set()


# Jobs belong to their credentials.


@pytest_twisted.async_yield_fixture
async def jobs(clients: dict[str, Any]) -> AsyncIterator[dict[str, int]]:
    """
    Waiting jobs of alice, bob (one of them audited) and the daemon.
    """
    started = {
        "alice": await clients["alice"].call("access.hold", "a"),
        "bob": await clients["bob"].call("access.hold", "b"),
        "audited": await clients["bob"].call("access.audited", "x"),
        "internal": await clients["admin"].call("access.start_internal", "i"),
    }
    yield started
    for key in ("a", "b", "x", "i"):
        await clients["admin"].call("access.release", key)


@pytest_twisted.ensureDeferred
async def test_get_jobs_lists_only_what_the_user_may_see(clients: dict[str, Any], jobs: dict[str, int]) -> None:
    everything = set(jobs.values())
    assert await job_ids(clients["admin"]) == everything
    assert await job_ids(clients["carol"]) == everything
    assert await job_ids(clients["alice"]) == {jobs["alice"]}
    assert await job_ids(clients["bob"]) == {jobs["bob"], jobs["audited"]}
    assert await job_ids(clients["dave"]) == {jobs["audited"]}
    # The user's filters and options apply within what they see.
    assert await clients["alice"].call("core.get_jobs", [], {"count": True}) == 1
    assert await job_ids(clients["alice"], ["id", "=", jobs["bob"]]) == set()
    await refused(
        clients["alice"].call("core.get_jobs", [["id", "=", jobs["bob"]]], {"get": True}), errno.ENOENT
    )
    internal = await clients["admin"].call("core.get_jobs", [["id", "=", jobs["internal"]]], {"get": True})
    assert internal["credentials"] is None


@pytest_twisted.ensureDeferred
async def test_events_go_only_to_those_who_may_see_the_job(clients: dict[str, Any]) -> None:
    alice, bob = clients["alice"], clients["bob"]
    seen: dict[str, list[int]] = {"alice": [], "bob": []}
    waiting: dict[tuple[str, int], Deferred[None]] = {}

    def watcher(name: str) -> Any:
        def event(msg: str, collection: str, id: Any, fields: Any) -> None:
            seen[name].append(id)
            d = waiting.pop((name, id), None)
            if d is not None:
                d.callback(None)

        return event

    def told(name: str, job_id: int) -> Deferred[None]:
        if job_id in seen[name]:
            return Deferred.fromCoroutine(_done())
        return waiting.setdefault((name, job_id), Deferred())

    await alice.subscribe("core.get_jobs", watcher("alice"))
    await bob.subscribe("core.get_jobs", watcher("bob"))
    bobs = await bob.call("access.hold", "b")
    alices = await alice.call("access.hold", "a")
    internal = await clients["admin"].call("access.start_internal", "i")
    await told("alice", alices)
    more = await bob.call("access.hold", "b2")
    await told("bob", more)
    # Events reach each connection in order: had the others' been sent, they would be here.
    assert set(seen["alice"]) == {alices}
    assert set(seen["bob"]) == {bobs, more}
    assert internal not in seen["alice"] + seen["bob"]
    for key in ("a", "b", "b2", "i"):
        await clients["admin"].call("access.release", key)


async def _done() -> None:
    return None


@pytest_twisted.ensureDeferred
async def test_abort_needs_the_owner_or_a_full_admin(clients: dict[str, Any], jobs: dict[str, int]) -> None:
    error = await refused(clients["bob"].call("core.job_abort", jobs["alice"]), errno.EPERM)
    assert error.reason == "Job is not owned by current session"
    await refused(clients["carol"].call("core.job_abort", jobs["alice"]), errno.EPERM)
    await refused(clients["dave"].call("core.job_abort", jobs["audited"]), errno.EPERM)
    error = await refused(clients["alice"].call("core.job_abort", jobs["internal"]), errno.EPERM)
    assert error.reason == "Only users with full administrative privileges can access internally ran jobs"
    await clients["alice"].call("core.job_abort", jobs["alice"])
    await clients["admin"].call("core.job_abort", jobs["bob"])
    states = {job["id"]: job["state"] for job in await clients["admin"].call("core.get_jobs")}
    assert states[jobs["internal"]] == states[jobs["audited"]] == "RUNNING"


@pytest_twisted.ensureDeferred
async def test_wait_needs_to_see_the_job(clients: dict[str, Any], jobs: dict[str, int]) -> None:
    error = await refused(clients["bob"].call_job("core.job_wait", jobs["alice"]), errno.EPERM)
    assert "not owned" in error.reason
    await refused(clients["alice"].call_job("core.job_wait", jobs["internal"]), errno.EPERM)
    # Readers may wait: the read-only admin and an auditor.
    waited = clients["carol"].call_job("core.job_wait", jobs["alice"])
    audit = clients["dave"].call_job("core.job_wait", jobs["audited"])
    await clients["admin"].call("access.release", "a")
    await clients["admin"].call("access.release", "x")
    assert await waited == "a"
    assert await audit == "x"


@pytest_twisted.ensureDeferred
async def test_logs_are_for_those_who_may_read_the_job(
    daemon: RunningDaemon, clients: dict[str, Any], jobs: dict[str, int]
) -> None:
    await refused(clients["bob"].call("core.job_download_logs", jobs["alice"], "a.log"), errno.EPERM)
    await refused(clients["alice"].call("core.job_download_logs", jobs["internal"], "i.log"), errno.EPERM)
    for reader in ("alice", "carol", "admin"):
        url = await clients[reader].call("core.job_download_logs", jobs["alice"], "a.log", True)
        response = await treq.get(daemon.http_url + url, reactor=reactor)
        assert response.code == 200
        assert await response.content() == b"holding a\n"


@pytest_twisted.ensureDeferred
async def test_following_a_log(clients: dict[str, Any], jobs: dict[str, int]) -> None:
    alice = clients["alice"]
    texts: list[str] = []
    arrived: list[Deferred[None]] = []

    def on_log(msg: str, collection: str, id: Any, fields: Any) -> None:
        assert (msg, collection, id) == ("added", f"core.job_log:{jobs['alice']}", jobs["alice"])
        texts.append(fields["data"])
        while arrived:
            arrived.pop().callback(None)

    async def text_becomes(expected: str) -> None:
        while "".join(texts) != expected:
            d: Deferred[None] = Deferred()
            arrived.append(d)
            await d

    await alice.subscribe(f"core.job_log:{jobs['alice']}", on_log)
    await text_becomes("holding a\n")
    await clients["admin"].call("access.release", "a")
    await text_becomes("holding a\nreleased a\n")

    await refused(clients["bob"].subscribe(f"core.job_log:{jobs['alice']}", on_log), errno.EPERM)
    await refused(clients["bob"].subscribe(f"core.job_log:{jobs['audited']}", on_log), errno.ENOENT)
    await refused(clients["bob"].subscribe("core.job_log:nope", on_log), errno.EINVAL)
    await refused(clients["bob"].subscribe("core.job_log:99999", on_log), errno.ENOENT)


@pytest_twisted.ensureDeferred
async def test_a_finished_jobs_log_comes_whole(clients: dict[str, Any]) -> None:
    admin = clients["admin"]
    job_id = await admin.call("sample.logging_job", 3)
    await admin.call_job("core.job_wait", job_id)
    got: Deferred[str] = Deferred()
    await admin.subscribe(f"core.job_log:{job_id}", lambda msg, collection, id, fields: got.callback(fields["data"]))
    assert await got == "line 0\nline 1\nline 2\n"


# Secrets.


@pytest_twisted.ensureDeferred
async def test_secret_arguments_are_redacted_everywhere(daemon: RunningDaemon, clients: dict[str, Any]) -> None:
    alice, admin = clients["alice"], clients["admin"]
    records: list[Any] = []
    await admin.subscribe("core.get_jobs", lambda msg, collection, id, fields: records.append(fields))
    data = {"token": "tok-123-secret", "nested": [{"password": "pw-456-secret", "name": "n"}], "other": 1}
    assert await alice.call_job("access.with_secret", data) == len("tok-123-secret")
    record = (await alice.call("core.get_jobs", [["method", "=", "access.with_secret"]], {"get": True}))
    assert record["arguments"] == [
        {"token": REDACTED, "nested": [{"password": REDACTED, "name": "n"}], "other": 1}
    ]
    statuses = await admin.call_job(
        "core.bulk", "user.create", [[{"username": "erin", "password": "pw-789-secret", "roles": []}]]
    )
    assert statuses[0]["error"] is None
    bulk = await admin.call("core.get_jobs", [["method", "=", "core.bulk"]], {"get": True})
    assert bulk["arguments"][1] == [[{"username": "erin", "password": REDACTED, "roles": []}]]
    assert await connect_and_login(daemon, "erin", "pw-789-secret")
    # Neither the events nor the job history saw a secret.
    events = repr(records)
    for secret_text in ("tok-123-secret", "pw-456-secret", "pw-789-secret"):
        assert secret_text not in events
    stored = await stored_records(daemon)
    assert stored and all(secret_text not in stored for secret_text in ("tok-123", "pw-456", "pw-789"))


async def connect_and_login(daemon: RunningDaemon, username: str, password: str) -> bool:
    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        return await client.login(username, password)
    finally:
        await client.close()


async def stored_records(daemon: RunningDaemon) -> str:
    """
    Every job record in the state database, as its raw text.
    """
    from twisted.internet.threads import deferToThread

    def read() -> str:
        with sqlite3.connect(daemon.state_dir / "midjobs.db") as db:
            return "\n".join(row[0] for row in db.execute("SELECT record FROM jobs"))

    return await deferToThread(read)


# A changed user.


@pytest_twisted.ensureDeferred
async def test_a_deleted_user_loses_access_at_once(clients: dict[str, Any]) -> None:
    admin, alice = clients["admin"], clients["alice"]
    alice_id = (await admin.call("user.query", [["username", "=", "alice"]], {"get": True}))["id"]
    assert (await alice.call("access.whoami"))["username"] == "alice"
    await admin.call("user.delete", alice_id)
    error = await refused(alice.call("access.whoami"), ENOTAUTHENTICATED)
    assert "Not authenticated" in error.reason
    assert not await alice.login("alice", password_of("alice"))


@pytest_twisted.ensureDeferred
async def test_role_changes_and_locks_apply_at_once(clients: dict[str, Any]) -> None:
    admin, bob = clients["admin"], clients["bob"]
    bob_id = (await admin.call("user.query", [["username", "=", "bob"]], {"get": True}))["id"]
    await admin.call("user.update", bob_id, {"roles": ["READONLY_ADMIN"]})
    await refused(bob.call("access.hold", "b"), errno.EACCES)
    assert await bob.call("access.peek") == "peeked"
    await admin.call("user.update", bob_id, {"locked": True})
    await refused(bob.call("access.whoami"), ENOTAUTHENTICATED)


# Failed logins.


@pytest_twisted.ensureDeferred
async def test_failed_logins_are_throttled(daemon: RunningDaemon, clients: dict[str, Any]) -> None:
    clock = Clock()
    daemon.middleware.logins.throttle.clock = clock
    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        for _ in range(5):
            assert not await client.login("alice", "wrong password")
        # Now even the right password fails at once, for alice from here,
        # over the WebSocket and HTTP; bob from here is not concerned.
        assert not await client.login("alice", password_of("alice"))
        status, body = await http_status(daemon, ("alice", password_of("alice")))
        assert status == 401
        status, body = await http_status(daemon, ("bob", password_of("bob")))
        assert status != 401
        clock.advance(61)
        assert await client.login("alice", password_of("alice"))
    finally:
        await client.close()


async def http_status(daemon: RunningDaemon, auth: tuple[str, str]) -> tuple[int, bytes]:
    response = await treq.post(
        daemon.http_url + "/_upload", data=b"", auth=auth, headers={"Content-Type": "multipart/form-data; boundary=x"},
        reactor=reactor,
    )
    return response.code, await response.content()


def test_throttle_counts_per_key() -> None:
    from midjobs.auth.throttle import LoginThrottle, source_key, user_key

    clock = Clock()
    throttle = LoginThrottle(clock, limit=3, window=10, cooldown=30)
    alice = [source_key("10.0.0.1"), user_key("10.0.0.1", "alice")]
    for _ in range(2):
        throttle.failed(alice)
        clock.advance(1)
    assert throttle.wait(alice) == 0
    throttle.failed(alice)
    assert throttle.wait(alice) == 30
    # Alice from elsewhere, and others from here, may go on.
    assert throttle.wait([source_key("10.0.0.2"), user_key("10.0.0.2", "alice")]) == 0
    assert throttle.wait([source_key("10.0.0.1"), user_key("10.0.0.1", "bob")]) == 0
    clock.advance(30)
    assert throttle.wait(alice) == 0
    # Failures spread wider than the window never add up.
    slow = [user_key("10.0.0.3", "slow")]
    for _ in range(5):
        throttle.failed(slow)
        clock.advance(11)
    assert throttle.wait(slow) == 0


def test_throttle_memory_is_bounded() -> None:
    from midjobs.auth.throttle import LoginThrottle

    throttle = LoginThrottle(Clock(), max_keys=100)
    for i in range(1000):
        throttle.failed([("user", f"user{i}")])
    assert len(throttle._failures) == 100


def test_throttle_follows_the_settings(tmp_path: Any) -> None:
    from twisted.cred.portal import Portal

    from midjobs.middleware import Middleware

    settings = Settings().updated_from({"auth": {"login_attempts": 2, "login_window": 10, "login_cooldown": 30}})
    throttle = Middleware(Clock(), tmp_path, portal=Portal(None, []), settings=settings).logins.throttle
    assert (throttle.limit, throttle.window, throttle.cooldown) == (2, 10, 30)
    with pytest.raises(Exception, match="login_attempts"):
        Settings().updated_from({"auth": {"login_attempts": 0}})


@pytest_twisted.ensureDeferred
async def test_logout_revokes_the_connections_tokens(daemon: RunningDaemon, clients: dict[str, Any]) -> None:
    alice = clients["alice"]
    kept = await alice.call("auth.generate_token", 600)
    other = await clients["bob"].call("auth.generate_token", 600)
    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        # A new connection logs in with the token, as a reloaded page does.
        assert await client.call("auth.login_with_token", kept)
        renewed = await client.call("auth.generate_token", 600)
        assert await alice.call("auth.logout") is True
        assert not await client.call("auth.login_with_token", kept)
        # The reloaded page's logout revokes the token it logged in with, and its own.
        assert await client.call("auth.login_with_token", renewed)
        still = await client.call("auth.generate_token", 600)
        assert await client.call("auth.logout") is True
        for token in (renewed, still):
            assert not await client.call("auth.login_with_token", token)
        # Tokens another connection made stay good.
        assert await client.call("auth.login_with_token", other)
    finally:
        await client.close()
