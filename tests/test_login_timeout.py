"""
A WebSocket that does not log in is closed after C{[limits] login_timeout}
seconds, with 1008 "Login timeout" (issue 11, finding 4: 60 connections
that never logged in were alive after 200 s).  A login cancels the
deadline; a logout starts a new one of the full length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from midjobs.config import Settings

from test_event_flow import User, logged, open_connection
from test_rpc import connect_raw, login



# In memory.


def test_login_timeout_closes_an_anonymous_connection(tmp_path: Path, log_events: list) -> None:
    conn = open_connection(tmp_path, Settings(login_timeout=5))
    conn.reactor.advance(4.9)
    assert conn.frames() == []
    conn.reactor.advance(0.2)
    assert conn.close_frame() == (1008, "Login timeout")
    [line] = logged(log_events, "not logged in")
    assert "192.0.2.7" in line


def test_login_in_time_keeps_the_connection(tmp_path: Path) -> None:
    """
    A login cancels the deadline; a logout starts a new one, of the full length.
    """
    conn = open_connection(tmp_path, Settings(login_timeout=5))
    conn.reactor.advance(4)
    conn.protocol.session.login(User("carol"))
    assert conn.reactor.getDelayedCalls() == []
    conn.reactor.advance(60)
    assert conn.frames() == []
    conn.protocol.session.logout()
    conn.reactor.advance(4.9)
    assert conn.frames() == []
    conn.reactor.advance(0.2)
    assert conn.close_frame() == (1008, "Login timeout")


def test_a_closed_connection_has_no_deadline(tmp_path: Path) -> None:
    conn = open_connection(tmp_path, Settings(login_timeout=5))
    conn.protocol.connectionLost(Failure(ConnectionDone()))
    assert conn.reactor.getDelayedCalls() == []


# Over real sockets.


@pytest.fixture
def settings(settings: Any) -> Any:
    return attrs.evolve(settings, login_timeout=1)


@pytest_twisted.ensureDeferred
async def test_anonymous_connections_are_closed_logged_in_ones_stay(
    daemon: Any, admin_client: Any, log_events: list
) -> None:
    """
    Of three connections, the one that does not log in is closed after the
    timeout; one that logged in and the trusted UNIX-socket peer (logged in
    as it connects) opened before it stay.
    """
    logged_in = await login(await connect_raw(daemon.ws_url))
    local = await connect_raw(daemon.unix_url)
    anonymous = await connect_raw(daemon.ws_url)
    port = anonymous.transport.getHost().port
    try:
        was_clean, code, reason = await anonymous.closed_with
        assert (was_clean, code, reason) == (True, 1008, "Login timeout")
        [line] = logged(log_events, "not logged in")
        assert "127.0.0.1" in line and str(port) in line, line
        assert await logged_in.call("core.ping") == "pong"
        assert await local.call("core.ping") == "pong"
        assert await local.call("auth.me")
    finally:
        await logged_in.close()
        await local.close()
