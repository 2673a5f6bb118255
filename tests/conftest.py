"""
Fixtures: a real daemon listening on 127.0.0.1 (port 0) and on a UNIX socket,
and real clients connected to it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import globalLogPublisher

from midjobs.auth import hashing
from midjobs.auth import users as users_module
from midjobs.client import Client, connect
from midjobs.config import Settings
from midjobs.daemon import Daemon
from midjobs.store import close_database, open_database

TESTS = Path(__file__).parent
#: The test-only services (thread jobs, pipes, failures), loaded as a --plugin.
SAMPLE_SERVICES = "sample_services"

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

#: scrypt's cost parameter C{N} for the passwords the tests hash in this
#: process: the smallest scrypt takes.  A hash records its parameters, so a
#: daemon verifies it the same way whatever cost it was made with; the
#: production cost (L{hashing.N}) would make each user created and each login
#: take tens of milliseconds of CPU, most of the time of many tests.
TEST_HASH_N = 2


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "production_hash_cost: hash passwords at the cost the daemon uses, not the tests' cheap one"
    )


@pytest.fixture(autouse=True)
def password_hash_cost(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """
    The scrypt cost C{N} at which this test hashes passwords in this process:
    L{TEST_HASH_N}, or the daemon's own for a test marked
    C{production_hash_cost}.  Daemons run as subprocesses keep their own.
    """
    if request.node.get_closest_marker("production_hash_cost") is None:
        monkeypatch.setattr(hashing, "N", TEST_HASH_N)
    # The hash an unknown user's login is checked against is made once and
    # kept: make it again at this test's cost, and forget it after.
    users_module._dummy_hash.cache_clear()
    yield hashing.N
    users_module._dummy_hash.cache_clear()


@attrs.frozen
class RunningDaemon:
    daemon: Daemon
    state_dir: Path
    socket_path: str
    port: int

    @property
    def middleware(self) -> Any:
        return self.daemon.middleware

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/current"

    @property
    def unix_url(self) -> str:
        return f"ws+unix://{self.socket_path}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def short_tmp() -> Any:
    """
    A directory with a short path, for UNIX sockets (108 bytes at most).
    """
    path = tempfile.mkdtemp(prefix="mj")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(tmp_path: Path, short_tmp: Path) -> Settings:
    return Settings(
        listen=("tcp:0:interface=127.0.0.1",),
        state_dir=str(tmp_path / "state"),
        socket=str(short_tmp / "midjobs.sock"),
        plugins=(SAMPLE_SERVICES,),
    )


@pytest_twisted.async_yield_fixture
async def pool(tmp_path: Path) -> AsyncIterator[Any]:
    """
    The connection pool of a new database in C{tmp_path}, closed afterwards.
    """
    pool = open_database(str(tmp_path / "midjobs.db"))
    yield pool
    await close_database(pool)


@pytest_twisted.async_yield_fixture
async def daemon(settings: Settings) -> AsyncIterator[RunningDaemon]:
    """
    A daemon started in this process, torn down after the test.
    """
    service = Daemon(settings, reactor)
    service.startService()
    await service.ready
    port = service.listeners[0].port.getHost().port
    yield RunningDaemon(service, Path(settings.state_dir), settings.socket_path, port)
    await service.stopService()


ADMIN = ("admin", "s3cret-pass")
USER = ("alice", "alice-pass")


@pytest_twisted.async_yield_fixture
async def admin_client(daemon: RunningDaemon) -> AsyncIterator[Client]:
    """
    A WebSocket client over TCP, logged in as a full administrator.
    """
    await daemon.middleware.users.create(
        {"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]}
    )
    client = await connect(daemon.ws_url, reactor=reactor)
    assert await client.login(*ADMIN)
    yield client
    await client.close()


@pytest_twisted.async_yield_fixture
async def connections(daemon: RunningDaemon) -> AsyncIterator[list[Client]]:
    """
    A list for the clients a test opens; they are closed after the test.
    """
    opened: list[Client] = []
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    """
    Every event logged while the test runs.
    """
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest_twisted.async_yield_fixture
async def anonymous_client(daemon: RunningDaemon) -> AsyncIterator[Client]:
    """
    A WebSocket client over TCP that has not logged in.
    """
    client = await connect(daemon.ws_url, reactor=reactor)
    yield client
    await client.close()


def subprocess_env() -> dict[str, str]:
    """
    The environment for midclt and twistd run as subprocesses of the tests.
    """
    env = dict(os.environ)
    root = str(TESTS.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, str(TESTS), env.get("PYTHONPATH")]))
    env.pop("COLUMNS", None)
    return env
