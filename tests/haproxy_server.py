"""
HAProxy from Debian in front of test nodes, configured from the example
deployment's C{etc/haproxy-cluster.cfg}.

L{start_haproxy} writes that file again with the ports of this run: its
C{bind} line on a free port of 127.0.0.1, its C{server} lines replaced by one
per node (with the example's check options), and a C{stats socket} in its
C{global} section so that tests can read what HAProxy thinks of each node.
It checks the result with C{haproxy -c -f}, runs C{haproxy -f cfg -db} (in the
foreground, logging to its standard output, kept in a file), and returns
once the frontend answers and every node is C{UP} in HAProxy's eyes.

A test module takes the fixture C{haproxy} by importing it::

    from haproxy_server import haproxy  # noqa: F401 (fixture)

Without the C{haproxy} program, the tests that use it are skipped with that
reason, and only then.
"""

from __future__ import annotations

import csv
import http.client
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import attrs
import pytest

__all__ = ["ETC_CONFIG", "HAProxy", "HAProxyFailed", "cluster_config", "find_haproxy", "haproxy", "start_haproxy"]

#: The example configuration of docs/cluster.rst.
ETC_CONFIG = Path(__file__).resolve().parent.parent / "etc" / "haproxy-cluster.cfg"
#: The backend of that configuration, whose servers are the nodes.
BACKEND = "nodes"
#: Seconds HAProxy has to start, and to see every node up.
READY_TIMEOUT = 30.0
#: Seconds HAProxy has to stop after SIGTERM before it gets SIGKILL.
STOP_GRACE = 10.0


class HAProxyFailed(RuntimeError):
    """
    HAProxy refused its configuration, ended, or did not get ready in time.
    """


def find_haproxy() -> str | None:
    """
    The C{haproxy} program (Debian puts it in C{/usr/sbin}), or L{None}.
    """
    path = os.pathsep.join(filter(None, [os.environ.get("PATH"), "/usr/sbin", "/usr/local/sbin"]))
    return shutil.which("haproxy", path=path)


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_config(template: str, port: int, servers: Sequence[tuple[str, int]], stats_socket: Path,
                   source: str | None = None, server_options: str | None = None) -> str:
    """
    C{template} (the text of L{ETC_CONFIG}) for this run.

    @param port: the frontend's port on 127.0.0.1.
    @param servers: each node's name and port on 127.0.0.1, in the order
        round-robin visits them.
    @param stats_socket: where HAProxy's admin socket goes.
    @param source: the address HAProxy connects to the nodes from (C{source}
        of each server); the system's choice by default.
    @param server_options: the options of each server line instead of the
        template's (C{check inter 2s fall 2 rise 1}).
    @raise ValueError: the template has no C{global} section, C{bind} line
        or C{server} line to rewrite.
    """
    lines: list[str] = []
    seen = {"global": False, "bind": False, "server": False}
    for line in template.splitlines():
        words = line.split()
        if words[:1] == ["global"]:
            seen["global"] = True
            lines += [line, f"    stats socket {stats_socket} mode 600 level admin"]
        elif words[:1] == ["bind"]:
            seen["bind"] = True
            lines.append(f"    bind 127.0.0.1:{port}")
        elif words[:1] == ["server"]:
            if not seen["server"]:
                options = server_options if server_options is not None else " ".join(words[3:])
                if source is not None:
                    options += f" source {source}"
                lines += [f"    server {name} 127.0.0.1:{server_port} {options}" for name, server_port in servers]
            seen["server"] = True
        else:
            lines.append(line)
    missing = [name for name, found in seen.items() if not found]
    if missing:
        raise ValueError(f"the HAProxy configuration has no {', '.join(missing)} line to rewrite")
    return "\n".join(lines) + "\n"


@attrs.define(eq=False)
class HAProxy:
    """
    One running C{haproxy -db}.

    @ivar port: its frontend's port on 127.0.0.1.
    @ivar directory: where its configuration, log and stats socket are.
    """

    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/current"

    @property
    def config_path(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def stats_socket(self) -> Path:
        return self.directory / "stats.sock"

    @property
    def log_path(self) -> Path:
        return self.directory / "haproxy.log"

    def log(self) -> str:
        """
        What it logged: one line per request (C{option httplog}), and its
        messages about the nodes going up and down.
        """
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    def command(self, line: str) -> str:
        """
        The answer of its admin socket to C{line} (C{show stat}, C{disable
        server nodes/n1}, ...).
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.stats_socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, str]:
        """
        The state HAProxy gives each node (C{UP}, C{DOWN}, C{UP 1/2}, C{MAINT}...), by name.
        """
        text = self.command("show stat").lstrip("# ")
        return {row["svname"]: row["status"] for row in csv.DictReader(io.StringIO(text))
                if row["pxname"] == BACKEND and row["svname"] not in ("BACKEND", "FRONTEND")}

    def wait_states(self, expected: Mapping[str, str], timeout: float = READY_TIMEOUT) -> None:
        """
        Wait until HAProxy gives each node of C{expected} that state.

        @raise HAProxyFailed: it does not within C{timeout} seconds, or ended.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise HAProxyFailed(f"haproxy ended ({self.process.returncode}):\n{self.log()}")
            try:
                states = self.server_states()
            except OSError:
                states = {}
            if all(states.get(name) == state for name, state in expected.items()):
                return
            if time.monotonic() > deadline:
                raise HAProxyFailed(f"the nodes are {states}, not {dict(expected)}, after {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def answers(self) -> bool:
        """
        Whether its frontend answers an HTTP request (C{GET /_health}), whatever the status.
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/_health")
            connection.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            connection.close()

    def stop(self, grace: float = STOP_GRACE) -> int:
        """
        Stop it: SIGTERM (HAProxy's hard stop), then SIGKILL if it still runs
        after C{grace} seconds.  Return its exit code.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_haproxy(directory: Path, servers: Sequence[tuple[str, int]], *, program: str | None = None,
                  source: str | None = None, server_options: str | None = None,
                  timeout: float = READY_TIMEOUT) -> HAProxy:
    """
    Run HAProxy in front of C{servers} (name and port of each node) with the
    configuration of L{ETC_CONFIG} (see L{cluster_config} for the other
    parameters); return once its frontend answers and every node is C{UP}.

    @raise HAProxyFailed: C{haproxy -c} refused the configuration, or HAProxy
        did not get ready (it is stopped first).
    """
    program = program or find_haproxy()
    if program is None:
        raise HAProxyFailed("haproxy is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    text = cluster_config(ETC_CONFIG.read_text(), port, servers, directory / "stats.sock", source, server_options)
    (directory / "haproxy.cfg").write_text(text)
    check = subprocess.run([program, "-c", "-f", str(directory / "haproxy.cfg")], capture_output=True, text=True,
                           timeout=60, check=False)
    if check.returncode != 0:
        raise HAProxyFailed(f"haproxy -c refused the configuration:\n{check.stdout}{check.stderr}\n{text}")
    with open(directory / "haproxy.log", "ab") as log:
        process = subprocess.Popen([program, "-f", str(directory / "haproxy.cfg"), "-db"], cwd=directory,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    proxy = HAProxy(port=port, directory=directory, process=process)
    try:
        deadline = time.monotonic() + timeout
        while not proxy.answers():
            if process.poll() is not None:
                raise HAProxyFailed(f"haproxy ended ({process.returncode}) before it answered:\n{proxy.log()}")
            if time.monotonic() > deadline:
                raise HAProxyFailed(f"haproxy did not answer within {timeout} s:\n{proxy.log()}")
            time.sleep(0.05)
        proxy.wait_states({name: "UP" for name, _ in servers}, max(0.0, deadline - time.monotonic()))
    except BaseException:
        proxy.stop()
        raise
    return proxy


@attrs.define
class HAProxyStarter:
    """
    What the C{haproxy} fixture gives a test: call it to start HAProxy in
    front of nodes; each one it started is stopped at the test's end.
    """

    directory: Path
    program: str
    started: list[HAProxy] = attrs.Factory(list)

    def __call__(self, servers: Sequence[tuple[str, int]], *, source: str | None = None,
                 server_options: str | None = None) -> HAProxy:
        proxy = start_haproxy(self.directory / f"haproxy{len(self.started) + 1}", servers, program=self.program,
                              source=source, server_options=server_options)
        self.started.append(proxy)
        return proxy


def haproxy_or_skip() -> str:
    """
    The C{haproxy} program; the calling test is skipped if there is none.
    """
    program = find_haproxy()
    if program is None:
        pytest.skip("HAProxy is not installed: no haproxy program in PATH or /usr/sbin (Debian package haproxy)")
    return program


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[HAProxyStarter]:
    """
    Starts HAProxy for a test (C{haproxy([("n1", port1), ("n2", port2)])}),
    stopped when the test ends.
    """
    starter = HAProxyStarter(tmp_path, haproxy_or_skip())
    try:
        yield starter
    finally:
        for proxy in starter.started:
            proxy.stop()
