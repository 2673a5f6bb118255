"""
The daemon as users start it: C{twistd -n midjobs} in a subprocess.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from conftest import subprocess_env
from test_midclt import midclt


class Twistd(ProcessProtocol):
    """
    Watches a twistd process's log for the daemon's port and readiness.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ready: Deferred[int] = Deferred()
        #: Fires with the exit code, or the negative signal number that ended it.
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = re.search(rb"Listening on (?:tcp|systemd):\S* \(IPv4Address\(.*?port=(\d+)\)\)", self.output)
        if b"midjobs is ready" in self.output and match and not self.ready.called:
            self.ready.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(self.output.decode()))
        status = reason.value
        self.ended.callback(-status.signal if status.signal else status.exitCode)


#: Runs its arguments as a command whose LISTEN_PID is its own pid, as
#: systemd's socket activation does.
AS_ACTIVATED = "import os, sys; os.environ['LISTEN_PID'] = str(os.getpid()); os.execv(sys.argv[1], sys.argv[1:])"


def twistd(
    *options: str,
    path: Path,
    env: dict[str, str] | None = None,
    fds: dict[int, int] | None = None,
    activated: bool = False,
) -> Twistd:
    """
    C{twistd -n midjobs *options}, logging to its standard output.

    @param env: variables to add to its environment.
    @param fds: descriptors of this process to hand it, by the number it
        sees them as (3 for systemd's first socket).
    @param activated: run it as systemd's socket activation does (its
        C{LISTEN_PID} is its own).
    """
    protocol = Twistd()
    twistd = str(Path(sys.executable).parent / "twistd")
    argv = [twistd, "-n", "--pidfile=", "--logfile=-", "midjobs", *options]
    if activated:
        argv = [sys.executable, "-c", AS_ACTIVATED, *argv]
    environment = {**subprocess_env(), "PYTHONUNBUFFERED": "1", **(env or {})}
    child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r", **(fds or {})}
    reactor.spawnProcess(protocol, argv[0], argv, env=environment, path=str(path), childFDs=child_fds)
    return protocol


@pytest_twisted.ensureDeferred
async def test_twistd_midjobs_end_to_end(tmp_path: Path, short_tmp: Path) -> None:
    socket = short_tmp / "midjobs.sock"
    process = twistd(
        "--state-dir", str(tmp_path / "state"),
        "--listen", "tcp:0:interface=127.0.0.1",
        "--socket", str(socket),
        "--log-level", "debug",
        path=tmp_path,
    )
    port = await process.ready
    assert oct(socket.stat().st_mode & 0o777) == "0o600"
    out, err, code = await midclt(
        "-u", f"ws+unix://{socket}", "call", "user.create",
        '{"username": "admin", "password": "s3cret", "roles": ["FULL_ADMIN"]}',
    )
    assert code == 0, err
    tcp = ["-u", f"ws://127.0.0.1:{port}/api/current", "-U", "admin", "-P", "s3cret"]
    out, err, code = await midclt(*tcp, "call", "--job", "core.job_test", '{"sleep": 0.5}')
    assert (out, code) == ("True\n", 0), err
    assert "Total Progress: [########################################] 100.00%" in err
    out, err, code = await midclt(*tcp, "call", "core.get_jobs", '[["method", "=", "core.job_test"]]', '{"get": true}')
    assert code == 0, err
    assert out.startswith('{"id": 1, ') and '"state": "SUCCESS"' in out

    # twistd stops cleanly, then ends itself with the signal it was sent.
    process.transport.signalProcess(signal.SIGTERM)
    assert await process.ended == -signal.SIGTERM
    log = process.output.decode()
    assert "Job 1 (core.job_test) started" in log
    assert "Job 1 (core.job_test) ended SUCCESS" in log
    assert "Received SIGTERM" in log and "Main loop terminated." in log


@pytest_twisted.ensureDeferred
async def test_config_file_and_command_line(tmp_path: Path, short_tmp: Path) -> None:
    config = tmp_path / "midjobs.toml"
    config.write_text(
        f'[daemon]\nlisten = ["tcp:1:interface=127.0.0.1"]\nstate_dir = "{tmp_path / "state"}"\n'
        f'socket = "{short_tmp / "from-config.sock"}"\n[jobs]\nkeep_finished = 10\n'
    )
    # The command line's --listen wins over the file's.
    process = twistd("--config", str(config), "--listen", "tcp:0:interface=127.0.0.1", path=tmp_path)
    await process.ready
    assert (short_tmp / "from-config.sock").exists()
    process.transport.signalProcess(signal.SIGTERM)
    assert await process.ended == -signal.SIGTERM


@pytest_twisted.ensureDeferred
async def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "midjobs.toml"
    config.write_text("[jobs]\nkeep_finished = -3\n")
    process = twistd("--config", str(config), path=tmp_path)
    process.ready.addErrback(lambda failure: None)
    code = await process.ended
    assert code != 0
    assert "jobs.keep_finished must be a positive integer" in process.output.decode()
    assert "Traceback" not in process.output.decode()
