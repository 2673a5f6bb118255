"""
Socket activation (C{systemd:} listeners on a socket systemd holds across
restarts) from a real C{twistd -n midjobs}, and the units in C{etc/} as
C{systemd-analyze} reads them.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from midjobs.config import ConfigError
from midjobs.daemon import server_endpoint
from test_systemd_notify import processes  # noqa: F401 (fixture)
from test_twistd import twistd

ETC = Path(__file__).parent.parent / "etc"


@pytest.fixture
def held_socket() -> Any:
    """
    A listening TCP socket on 127.0.0.1, as systemd holds it for a
    C{.socket} unit.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def _activated(held: socket.socket, tmp_path: Path, short_tmp: Path, endpoint: str, name: str) -> Any:
    """
    A daemon handed C{held} as systemd hands a C{.socket} unit's socket:
    descriptor 3, C{LISTEN_FDS}, C{LISTEN_FDNAMES} (C{FileDescriptorName=},
    by default the unit's name) and C{LISTEN_PID}.
    """
    return twistd(
        "--state-dir", str(tmp_path / "state"),
        "--listen", endpoint,
        "--socket", str(short_tmp / "midjobs.sock"),
        path=tmp_path,
        env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": name},
        fds={3: held.fileno()},
        activated=True,
    )


@pytest_twisted.ensureDeferred
async def test_socket_activation_keeps_the_socket_across_a_restart(
    tmp_path: Path, short_tmp: Path, held_socket: socket.socket, processes: list[Any]  # noqa: F811
) -> None:
    port = held_socket.getsockname()[1]
    url = f"http://127.0.0.1:{port}/_download/nothing-here"
    first = _activated(held_socket, tmp_path, short_tmp, "systemd:domain=INET:index=0", "midjobs.socket")
    processes.append(first)
    assert await first.ready == port
    response = await treq.get(url)
    assert response.code == 404
    await response.content()

    first.transport.signalProcess(signal.SIGTERM)
    assert await first.ended == -signal.SIGTERM
    # No daemon now, but the socket is still held: a client's request waits
    # in its queue and is answered by the next daemon.
    waiting = treq.get(url)
    second = _activated(held_socket, tmp_path, short_tmp, "systemd:domain=INET:name=http", "http")
    processes.append(second)
    response = await waiting
    assert response.code == 404
    await response.content()
    assert await second.ready == port
    second.transport.signalProcess(signal.SIGTERM)
    assert await second.ended == -signal.SIGTERM
    log = second.output.decode()
    assert "Listening on systemd:domain=INET:name=http (IPv4Address(type='TCP', host='127.0.0.1'," in log


@pytest_twisted.ensureDeferred
async def test_no_socket_from_systemd_is_a_clear_error(tmp_path: Path, short_tmp: Path, processes: list[Any]) -> None:  # noqa: F811
    process = twistd(
        "--state-dir", str(tmp_path / "state"),
        "--listen", "systemd:domain=INET:index=0",
        "--socket", str(short_tmp / "midjobs.sock"),
        path=tmp_path,
    )
    processes.append(process)
    process.ready.addErrback(lambda failure: None)
    assert await process.ended == 1
    log = process.output.decode()
    assert "midjobs could not start: cannot listen on systemd:domain=INET:index=0: systemd passed no such socket" in log
    assert "Traceback" not in log


def test_server_endpoint_names_a_missing_systemd_socket() -> None:
    with pytest.raises(ConfigError, match="cannot listen on systemd:domain=INET:name=web: systemd passed no such socket"):
        server_endpoint(reactor, "systemd:domain=INET:name=web")


def _systemd_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    try:
        return subprocess.run(["systemd-analyze", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"systemd-analyze cannot run here: {e}")


@pytest.fixture
def units(tmp_path: Path) -> Path:
    for name in ("midjobs.service", "midjobs.socket"):
        shutil.copy(ETC / name, tmp_path / name)
    return tmp_path


def test_units_verify(units: Path) -> None:
    result = _systemd_analyze("verify", "./midjobs.socket", "./midjobs.service", cwd=units)
    # verify warns of unknown keys and bad values on stderr, and still exits 0.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_broken_unit_does_not_verify(units: Path) -> None:
    unit = units / "midjobs.service"
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notifyy").replace("NoNewPrivileges=", "NoNewPrivilege="))
    result = _systemd_analyze("verify", "./midjobs.service", cwd=units)
    assert "notifyy" in result.stderr and "NoNewPrivilege" in result.stderr


def test_the_service_is_hardened(units: Path) -> None:
    result = _systemd_analyze("security", "--offline=yes", "./midjobs.service", cwd=units)
    match = re.search(r"Overall exposure level for midjobs\.service: (\d+\.\d+)", result.stdout)
    if result.returncode != 0 or match is None:
        pytest.skip(f"this systemd-analyze cannot judge a unit offline: {result.stderr.strip()}")
    # 10 is a unit with no protection at all; systemd calls below 5 "OK".
    assert float(match.group(1)) < 5.0, result.stdout


def test_the_service_says_what_it_needs() -> None:
    service = (ETC / "midjobs.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", service, re.MULTILINE))
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main" and settings["WatchdogSec"] == "30"
    assert settings["ProtectSystem"] == "strict" and settings["ProtectHome"] == "yes"
    assert settings["PrivateTmp"] == "yes" and settings["NoNewPrivileges"] == "yes"
    assert settings["StateDirectory"] == "midjobs" and settings["ReadWritePaths"] == "/var/lib/midjobs"
    assert settings["LimitNOFILE"] == "65536"
    # Longer than [jobs] drain_timeout's default, so running jobs may finish.
    assert int(settings["TimeoutStopSec"]) > 30
    socket_unit = (ETC / "midjobs.socket").read_text()
    assert "FileDescriptorName=http" in socket_unit and "ListenStream=127.0.0.1:6000" in socket_unit
