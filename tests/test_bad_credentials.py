"""
Every kind of bad credentials at once, over HTTP and the WebSocket: each is
refused with the right status or answer, starts nothing, and the daemon goes
on serving everyone else.

The cases are tables, so it is plain how many the suite throws at the daemon.
"""

from __future__ import annotations

import json
from base64 import b64encode
from typing import Any, Callable

import attrs
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import Clock

from conftest import ADMIN, RunningDaemon
from midjobs.client import connect

ALICE = ("alice", "alice-secret-pass")


def basic_raw(raw: bytes) -> str:
    return "Basic " + b64encode(raw).decode()


def basic(user: str, password: str) -> str:
    return basic_raw(f"{user}:{password}".encode())


@attrs.frozen
class Secrets:
    """
    Live, dead and borrowed credentials made for one test.
    """

    deleted_user_key: str
    deleted_key: str
    live_key: str
    expired_token: str
    used_token: str
    unix_only_token: str
    deleted_user_token: str
    download_token: str
    download_job: int
    other_job: int
    login_token: str


async def make_secrets(daemon: RunningDaemon, admin: Any, clock: Clock) -> Secrets:
    """
    Users alice (live), bob (deleted later) and carol (locked), with keys
    and tokens in every state a token or key can be refused in.
    """
    for username, extra in (("alice", {}), ("bob", {}), ("carol", {"locked": True})):
        await admin.call(
            "user.create",
            {"username": username, "password": f"{username}-secret-pass", "roles": ["FULL_ADMIN"], **extra},
        )
    live_key = (await admin.call("api_key.create", {"name": "live", "username": "alice"}))["key"]
    dead = await admin.call("api_key.create", {"name": "dead", "username": "alice"})
    await admin.call("api_key.delete", dead["id"])
    bobs_key = (await admin.call("api_key.create", {"name": "k", "username": "bob"}))["key"]

    bob = await connect(daemon.ws_url, reactor=reactor)
    assert await bob.login("bob", "bob-secret-pass")
    bobs_token = await bob.call("auth.generate_token", 600)
    await bob.close()
    bob_id = (await admin.call("user.query", [["username", "=", "bob"]], {"get": True}))["id"]
    await admin.call("user.delete", bob_id)

    daemon.middleware.tokens.clock = clock
    expired = await admin.call("auth.generate_token", 60)
    clock.advance(61)
    used = await admin.call("auth.generate_token", 600, {}, False, True)
    assert await (await connect(daemon.ws_url, reactor=reactor)).call("auth.login_with_token", used)

    local = await connect(daemon.unix_url, reactor=reactor)
    unix_only = await local.call("auth.generate_token", 600, {}, True)
    await local.close()

    job_id, url = await admin.call("core.download", "system.debug", [], "debug.txz")
    other_job, _ = await admin.call("core.download", "system.debug", [], "other.txz")
    login_token = await admin.call("auth.generate_token", 600)
    return Secrets(
        deleted_user_key=bobs_key,
        deleted_key=dead["key"],
        live_key=live_key,
        expired_token=expired,
        used_token=used,
        unix_only_token=unix_only,
        deleted_user_token=bobs_token,
        download_token=url.rsplit("auth_token=", 1)[1],
        download_job=job_id,
        other_job=other_job,
        login_token=login_token,
    )


#: Authorization headers /_upload must answer 401 to: (case, header or None).
HTTP_HEADERS: list[tuple[str, Callable[[Secrets], list[str]]]] = [
    ("no credentials", lambda s: []),
    ("Basic not base64", lambda s: ["Basic !!!not-base64!!!"]),
    ("Basic not UTF-8", lambda s: [basic_raw(b"admin:\xff\xfe")]),
    ("Basic without a colon", lambda s: [basic_raw(b"admin")]),
    ("Basic empty password", lambda s: [basic(ADMIN[0], "")]),
    ("Basic empty user", lambda s: [basic("", ADMIN[1])]),
    ("Basic wrong password", lambda s: [basic(ADMIN[0], "wrong")]),
    ("Basic unknown user", lambda s: [basic("nobody", ADMIN[1])]),
    ("Basic very long user name", lambda s: [basic("u" * 6000, "x")]),
    ("Basic very long password", lambda s: [basic(ADMIN[0], "p" * 6000)]),
    ("Basic locked user", lambda s: [basic("carol", "carol-secret-pass")]),
    ("Basic deleted user", lambda s: [basic("bob", "bob-secret-pass")]),
    ("Basic another user's password", lambda s: [basic("alice", ADMIN[1])]),
    ("Bearer forged key", lambda s: ["Bearer 1-" + "A" * 64]),
    ("Bearer deleted key", lambda s: ["Bearer " + s.deleted_key]),
    ("Bearer key of a deleted user", lambda s: ["Bearer " + s.deleted_user_key]),
    ("Bearer key with a changed character", lambda s: ["Bearer " + s.live_key[:-1] + ("A" if s.live_key[-1] != "A" else "B")]),
    ("Bearer empty", lambda s: ["Bearer "]),
    ("Token forged", lambda s: ["Token " + "x" * 43]),
    ("Token expired", lambda s: ["Token " + s.expired_token]),
    ("Token single-use, reused", lambda s: ["Token " + s.used_token]),
    ("Token bound to the UNIX socket", lambda s: ["Token " + s.unix_only_token]),
    ("Token of a deleted user", lambda s: ["Token " + s.deleted_user_token]),
    ("Token of a download, used to log in", lambda s: ["Token " + s.download_token]),
    ("Token not ASCII", lambda s: ["Token t\u00f6ken"]),
    ("unknown scheme", lambda s: ["Digest username=admin"]),
    ("two Authorization headers", lambda s: [basic(*ADMIN), basic(*ADMIN)]),
]

#: Query strings /_upload must answer 401 to.
HTTP_QUERIES: list[tuple[str, Callable[[Secrets], str]]] = [
    ("auth_token forged", lambda s: "auth_token=" + "y" * 43),
    ("auth_token empty", lambda s: "auth_token="),
    ("auth_token twice", lambda s: f"auth_token={s.used_token}&auth_token={s.used_token}"),
    ("auth_token expired", lambda s: "auth_token=" + s.expired_token),
]

#: /_download URLs that must answer 401: (case, path).
DOWNLOADS: list[tuple[str, Callable[[Secrets], str]]] = [
    ("download without a token", lambda s: f"/_download/{s.download_job}"),
    ("download with a forged token", lambda s: f"/_download/{s.download_job}?auth_token=" + "z" * 43),
    ("download token for another job", lambda s: f"/_download/{s.other_job}?auth_token={s.download_token}"),
    ("download with a login token", lambda s: f"/_download/{s.download_job}?auth_token={s.login_token}"),
    ("download with an API key", lambda s: f"/_download/{s.download_job}?auth_token={s.live_key}"),
    ("download with an expired login token", lambda s: f"/_download/{s.download_job}?auth_token={s.expired_token}"),
]

#: WebSocket logins that must fail: (case, method, params).
WS_LOGINS: list[tuple[str, str, Callable[[Secrets], list[Any]]]] = [
    ("login_ex wrong password", "auth.login_ex", lambda s: [{"mechanism": "PASSWORD_PLAIN", "username": ADMIN[0], "password": "x"}]),
    ("login_ex unknown user", "auth.login_ex", lambda s: [{"mechanism": "PASSWORD_PLAIN", "username": "nobody", "password": ADMIN[1]}]),
    ("login_ex empty password", "auth.login_ex", lambda s: [{"mechanism": "PASSWORD_PLAIN", "username": ADMIN[0], "password": ""}]),
    ("login_ex very long user name", "auth.login_ex", lambda s: [{"mechanism": "PASSWORD_PLAIN", "username": "u" * 6000, "password": "x"}]),
    ("login_ex locked user", "auth.login_ex", lambda s: [{"mechanism": "PASSWORD_PLAIN", "username": "carol", "password": "carol-secret-pass"}]),
    ("login_ex deleted user", "auth.login_ex", lambda s: [{"mechanism": "PASSWORD_PLAIN", "username": "bob", "password": "bob-secret-pass"}]),
    ("login_ex key of another user", "auth.login_ex", lambda s: [{"mechanism": "API_KEY_PLAIN", "username": "admin", "api_key": s.live_key}]),
    ("login_ex deleted key", "auth.login_ex", lambda s: [{"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": s.deleted_key}]),
    ("login wrong password", "auth.login", lambda s: [ADMIN[0], "wrong"]),
    ("login user name with NUL", "auth.login", lambda s: ["admin\x00", ADMIN[1]]),
    ("login_with_api_key forged", "auth.login_with_api_key", lambda s: ["2-" + "B" * 64]),
    ("login_with_api_key of a deleted user", "auth.login_with_api_key", lambda s: [s.deleted_user_key]),
    ("login_with_token forged", "auth.login_with_token", lambda s: ["w" * 43]),
    ("login_with_token expired", "auth.login_with_token", lambda s: [s.expired_token]),
    ("login_with_token reused", "auth.login_with_token", lambda s: [s.used_token]),
    ("login_with_token bound to the UNIX socket", "auth.login_with_token", lambda s: [s.unix_only_token]),
    ("login_with_token of a deleted user", "auth.login_with_token", lambda s: [s.deleted_user_token]),
    ("login_with_token of a download", "auth.login_with_token", lambda s: [s.download_token]),
    ("login_with_token an API key", "auth.login_with_token", lambda s: [s.live_key]),
]


def upload_body() -> tuple[bytes, str]:
    boundary = "b0undary"
    data = json.dumps({"method": "core.job_test", "params": [{}]})
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="data"\r\n\r\n{data}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\nxyz\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest_twisted.ensureDeferred
async def test_no_bad_credentials_get_in(daemon: RunningDaemon, admin_client: Any) -> None:
    # Here the checkers must refuse each case, not the throttle of failed logins.
    daemon.middleware.logins.throttle.limit = 10_000
    secrets = await make_secrets(daemon, admin_client, Clock())
    jobs_before = len(await admin_client.call("core.get_jobs", [["method", "=", "core.job_test"]]))
    body, content_type = upload_body()

    for case, header in HTTP_HEADERS:
        headers = {"Content-Type": [content_type], "Authorization": header(secrets)}
        if not headers["Authorization"]:
            del headers["Authorization"]
        response = await treq.post(daemon.http_url + "/_upload", data=body, headers=headers, reactor=reactor)
        answer = await response.content()
        assert response.code == 401, (case, answer)
    for case, query in HTTP_QUERIES:
        response = await treq.post(
            f"{daemon.http_url}/_upload?{query(secrets)}", data=body, headers={"Content-Type": [content_type]}, reactor=reactor
        )
        assert response.code == 401, (case, await response.content())
    for case, path in DOWNLOADS:
        response = await treq.get(daemon.http_url + path(secrets), reactor=reactor)
        assert response.code == 401, (case, await response.content())

    client = await connect(daemon.ws_url, reactor=reactor)
    try:
        for case, method, params in WS_LOGINS:
            answer = await client.call(method, *params(secrets))
            assert answer in (False, {"response_type": "AUTH_ERR"}), (case, answer)
            me = client.call("auth.me")
            with pytest.raises(Exception, match="Not authenticated"):
                await me
    finally:
        await client.close()

    # None got in: no upload started a job, and the download is still there for its owner.
    assert len(await admin_client.call("core.get_jobs", [["method", "=", "core.job_test"]])) == jobs_before
    response = await treq.get(f"{daemon.http_url}/_download/{secrets.download_job}?auth_token={secrets.download_token}", reactor=reactor)
    assert response.code == 200
    assert (await response.content())[:6] == b"\xfd7zXZ\x00"
    # And the daemon serves the good credentials as ever.
    response = await treq.post(
        daemon.http_url + "/_upload", data=body, headers={"Content-Type": [content_type], "Authorization": [basic(*ALICE)]},
        reactor=reactor,
    )
    assert response.code == 200, await response.content()

