"""
The login throttle counts per source and per (source, user name); the source
behind trusted reverse proxies; the UNIX socket is never throttled (issue 11,
"Throttle lock-out").
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import pytest_twisted
import treq
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock

from midjobs.addresses import client_address, proxy_networks
from midjobs.auth.gate import LoginGate, LoginThrottled
from midjobs.auth.throttle import LoginThrottle, source_key, user_key
from midjobs.client import connect
from midjobs.config import Settings

from conftest import ADMIN, RunningDaemon

# -- client_address -------------------------------------------------------------------

PROXIES = proxy_networks(("10.0.0.1", "10.1.0.0/16", "::1"))


def headers(**values: str) -> Any:
    return lambda name: values.get(name.replace("-", "_"))


def resolve(peer_host: str, **values: str) -> str:
    peer = (IPv6Address if ":" in peer_host else IPv4Address)("TCP", peer_host, 5555)
    return client_address(peer, headers(**values), PROXIES).host  # type: ignore[attr-defined]


def test_untrusted_peers_headers_are_ignored() -> None:
    assert resolve("192.0.2.7", x_forwarded_for="203.0.113.9") == "192.0.2.7"
    assert resolve("192.0.2.7", forwarded="for=203.0.113.9") == "192.0.2.7"
    assert client_address(IPv4Address("TCP", "10.0.0.1", 1), headers(x_forwarded_for="1.2.3.4"), ()).host == "10.0.0.1"


def test_right_most_address_that_is_no_trusted_proxy() -> None:
    # The client may put anything at the left; only the proxies' own entries count.
    assert resolve("10.0.0.1", x_forwarded_for="6.6.6.6, 203.0.113.9") == "203.0.113.9"
    assert resolve("10.0.0.1", x_forwarded_for="6.6.6.6, 203.0.113.9, 10.1.2.3") == "203.0.113.9"
    assert resolve("10.0.0.1", x_forwarded_for="203.0.113.9:4711") == "203.0.113.9"
    assert resolve("10.0.0.1", x_forwarded_for="10.1.0.5, 10.0.0.1") == "10.1.0.5"  # all trusted: the left-most
    assert resolve("10.0.0.1", x_forwarded_for="garbage, 10.1.0.5") == "10.1.0.5"
    assert resolve("10.0.0.1", x_forwarded_for="6.6.6.6, unknown") == "10.0.0.1"
    assert resolve("10.0.0.1") == "10.0.0.1"
    assert resolve("::1", x_forwarded_for="2001:db8::5") == "2001:db8::5"
    assert resolve("::1", x_forwarded_for="[2001:db8::5]:80") == "2001:db8::5"
    assert resolve("10.0.0.1", x_forwarded_for="::ffff:203.0.113.9") == "203.0.113.9"


def test_forwarded_header() -> None:
    assert resolve("10.0.0.1", forwarded='for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https') == "2001:db8:cafe::17"
    assert resolve("10.0.0.1", forwarded="For=203.0.113.9;by=10.0.0.1, for=10.1.1.1") == "203.0.113.9"
    assert resolve("10.0.0.1", forwarded="for=_hidden") == "10.0.0.1"
    # X-Forwarded-For, if there is one, is the header read.
    assert resolve("10.0.0.1", forwarded="for=6.6.6.6", x_forwarded_for="203.0.113.9") == "203.0.113.9"


def test_unix_peer_is_itself() -> None:
    peer = UNIXAddress(b"/run/midjobs.sock")
    assert client_address(peer, headers(x_forwarded_for="1.2.3.4"), PROXIES) is peer


# -- the gate ------------------------------------------------------------------------------


class Portal:
    """
    Knows one password; records the logins it checked.
    """

    def __init__(self) -> None:
        self.checked = 0

    async def _login(self, credentials: Any) -> Any:
        self.checked += 1
        if credentials.password != b"right":
            raise UnauthorizedLogin()
        return attrs.make_class("User", ["username"])(credentials.username.decode())

    def login(self, credentials: Any, mind: Any, *interfaces: Any) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self._login(credentials)).addCallback(lambda user: (interfaces[0], user, None))


async def attempt(gate: LoginGate, source: str, user: str = "admin", password: str = "wrong") -> str:
    try:
        await gate.login(UsernamePassword(user.encode(), password.encode()), source, "password")
    except LoginThrottled:
        return "throttled"
    except UnauthorizedLogin:
        return "refused"
    return "in"


@pytest_twisted.ensureDeferred
async def test_nobody_locks_a_user_out_from_elsewhere() -> None:
    # The finding: five bad passwords for admin from anywhere locked admin out everywhere.
    clock = Clock()
    gate = LoginGate(Portal(), LoginThrottle(clock, limit=5, window=60, cooldown=60))
    for _ in range(5):
        assert await attempt(gate, "192.0.2.66") == "refused"
    assert await attempt(gate, "192.0.2.66", password="right") == "throttled"
    assert await attempt(gate, "192.0.2.10", password="right") == "in"
    # The attacker's source may still try other names, up to its own limit.
    for i in range(15):
        assert await attempt(gate, "192.0.2.66", user=f"user{i}") == "refused"
    assert await attempt(gate, "192.0.2.66", user="someone") == "throttled"
    assert await attempt(gate, "192.0.2.10", user="someone", password="right") == "in"
    clock.advance(61)
    assert await attempt(gate, "192.0.2.66", password="right") == "in"


@pytest_twisted.ensureDeferred
async def test_unix_socket_logins_are_never_throttled() -> None:
    portal = Portal()
    gate = LoginGate(portal, LoginThrottle(Clock(), limit=2))
    for _ in range(10):
        assert await attempt(gate, "unix") == "refused"
    assert await attempt(gate, "unix", password="right") == "in"
    assert portal.checked == 11


def test_throttle_keys() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, limit=2, window=10, cooldown=30, source_factor=3)
    assert throttle.source_limit == 6
    pair = [source_key("10.0.0.1"), user_key("10.0.0.1", "alice")]
    throttle.failed(pair)
    assert throttle.wait(pair) == 0
    throttle.failed(pair)
    assert throttle.wait(pair) == 30
    assert throttle.wait([source_key("10.0.0.1"), user_key("10.0.0.1", "bob")]) == 0
    assert throttle.wait([source_key("10.0.0.2"), user_key("10.0.0.2", "alice")]) == 0
    throttle.limit = 100  # the source's limit follows
    assert throttle.source_limit == 300


# -- end to end, behind a trusted proxy -------------------------------------------------------


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, trusted_proxies=("127.0.0.1",))


async def http_login(daemon: RunningDaemon, client: str, password: str) -> int:
    response = await treq.post(
        daemon.http_url + "/_upload",
        data=b"",
        auth=(ADMIN[0], password),
        headers={"X-Forwarded-For": f"6.6.6.6, {client}", "Content-Type": "multipart/form-data; boundary=x"},
        reactor=reactor,
    )
    await response.content()
    return response.code


@pytest_twisted.ensureDeferred
async def test_behind_a_proxy_each_client_has_its_own_count(daemon: RunningDaemon, log_events: Any) -> None:
    await daemon.middleware.users.create({"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
    for _ in range(5):
        assert await http_login(daemon, "203.0.113.66", "wrong") == 401
    failures = [e for e in log_events if e.get("log_format", "").startswith("Failed {kind} login")]
    assert {e["source"] for e in failures} == {"203.0.113.66"}
    # Locked out from there, not from another client of the same proxy.
    assert await http_login(daemon, "203.0.113.66", ADMIN[1]) == 401
    assert await http_login(daemon, "203.0.113.10", ADMIN[1]) != 401
    # Nor over the UNIX socket, with a password.
    for _ in range(10):
        local = await connect(daemon.unix_url, reactor=reactor)
        await local.call("auth.logout")
        assert not await local.login(ADMIN[0], "wrong")
        await local.close()
    local = await connect(daemon.unix_url, reactor=reactor)
    await local.call("auth.logout")
    assert await local.login(*ADMIN)
    await local.close()


@pytest_twisted.ensureDeferred
async def test_a_websocket_behind_a_proxy_is_its_client(daemon: RunningDaemon, log_events: Any) -> None:
    await daemon.middleware.users.create({"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})

    async def ws_login(client: str, password: str) -> bool:
        ws = await connect(daemon.ws_url, reactor=reactor, headers={"X-Forwarded-For": f"6.6.6.6, {client}"})
        try:
            return await ws.login(ADMIN[0], password)
        finally:
            await ws.close()

    for _ in range(5):
        assert not await ws_login("203.0.113.77", "wrong")
    failures = [e for e in log_events if e.get("log_format", "").startswith("Failed {kind} login")]
    assert {e["source"] for e in failures} == {"203.0.113.77"}
    assert not await ws_login("203.0.113.77", ADMIN[1])
    assert await ws_login("203.0.113.11", ADMIN[1])
