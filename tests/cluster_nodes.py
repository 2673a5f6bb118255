"""
Nodes of a cluster as users run them: C{twistd -n midjobs} subprocesses, each
with its own state directory, UNIX socket and TCP port on 127.0.0.1.

L{start_node} starts one and returns once it answers C{GET /_health} with
200; L{start_nodes} starts several side by side (their start-ups overlap).
Each node logs to a file in its directory (L{Node.log}), where its port is
read from the line C{Listening on tcp:...(IPv4Address(... port=N))}.
L{Node.stop} ends a node as an operator does (SIGTERM, then SIGKILL after
L{STOP_GRACE} seconds); L{Node.kill} sends one signal, as a crash test does;
L{restart_node} starts it again where it was.

A node is given C{--database URL --node NAME} only when the caller names
them (L{start_node}'s C{database_url} and C{node}): without them it is a
node of its own on SQLite, the default.

The waits here block the calling thread, so that the module serves the tests'
fixtures, the tests themselves and C{bench/} alike; they are bounded by
deadlines, and a node that ends before it is ready raises L{NodeFailed} with
the end of its log.

A test module takes the fixture C{cluster_nodes} by importing it::

    from cluster_nodes import cluster_nodes  # noqa: F401 (fixture)
"""

from __future__ import annotations

import ctypes
import http.client
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import pytest

from conftest import SAMPLE_SERVICES, subprocess_env

__all__ = ["Node", "NodeFailed", "NodeStarter", "STOP_GRACE", "cluster_nodes", "restart_node", "spawn_node", "start_node",
           "start_nodes"]

#: Seconds a node has to stop after SIGTERM before it gets SIGKILL.
STOP_GRACE = 10.0
#: Seconds a node has to be ready: generous, the test machine is small and shared.
READY_TIMEOUT = 60.0

_LISTENING = re.compile(rb"Listening on tcp:\S* \(IPv4Address\(.*?port=(\d+)\)\)")
_READY = b"midjobs is ready"
_PR_SET_PDEATHSIG = 1


class NodeFailed(RuntimeError):
    """
    A node ended, or did not become ready in time, before it served.
    """


def _end_with_parent() -> None:
    """
    In the child, before exec: get SIGKILL if the process that started it
    dies (Linux), so no node outlives a test run that was killed.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


@attrs.define(eq=False)
class Node:
    """
    One running C{twistd -n midjobs}.

    @ivar name: the name it was started with (C{--node}), or a label of the
        test's (the name of its directory) when it was not given one.
    @ivar root: its working directory, holding C{state/} and its log.
    @ivar port: the TCP port it listens on, on 127.0.0.1.
    @ivar socket_path: its UNIX socket (trusted: root and the tests' own user
        are administrators on it without logging in).
    """

    name: str
    root: Path
    socket_path: Path
    argv: list[str]
    process: subprocess.Popen[bytes]
    port: int = 0
    #: Where this run's output starts in the log file (a restarted node appends to it).
    log_start: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log_path(self) -> Path:
        return self.root / "twistd.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/current"

    @property
    def unix_url(self) -> str:
        return f"ws+unix://{self.socket_path}"

    def log(self) -> str:
        """
        Everything this run of it logged so far (twistd's log and its
        standard error).
        """
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    @property
    def returncode(self) -> int | None:
        """
        Its exit code once it ended (the negative signal number if a signal
        ended it), else L{None}.
        """
        return self.process.poll()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """
        Send it C{sig} (SIGKILL by default: a crash, or a power cut as the
        other nodes see it), if it still runs.
        """
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """
        Wait for it to end; return its exit code.

        @raise subprocess.TimeoutExpired: it still runs after C{timeout}.
        """
        return self.process.wait(timeout)

    def stop(self, grace: float = STOP_GRACE) -> int:
        """
        Stop it as an operator does: SIGTERM, then SIGKILL if it still runs
        after C{grace} seconds.  Return its exit code.
        """
        self.kill(signal.SIGTERM)
        try:
            return self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def health(self, timeout: float = 5.0) -> int | None:
        """
        The status of its C{GET /_health} (200 or 503), or L{None} if it does
        not answer.
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", "/_health")
            return connection.getresponse().status
        except OSError:
            return None
        finally:
            connection.close()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """
        Wait until it logged its port and readiness, and its C{/_health}
        answers 200.

        @raise NodeFailed: it ended first, or the time ran out.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.port == 0:
                output = self.log().encode()
                match = _LISTENING.search(output)
                if match and _READY in output:
                    self.port = int(match.group(1))
            if self.port and self.health() == 200:
                return
            if self.process.poll() is not None:
                raise NodeFailed(f"node {self.name} ended ({self.process.returncode}) before it was ready:\n"
                                 f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise NodeFailed(f"node {self.name} was not ready within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)


def _socket_dir() -> Path:
    """
    A directory with a short path for a node's UNIX socket (108 bytes at
    most), under the system's temporary directory.
    """
    return Path(tempfile.mkdtemp(prefix="mjn"))


def spawn_node(
    root: Path,
    name: str,
    *,
    database_url: str | None = None,
    node: str | None = None,
    port: int = 0,
    config: str | None = None,
    plugins: Sequence[str] = (SAMPLE_SERVICES,),
    options: Sequence[str] = (),
) -> Node:
    """
    Start C{twistd -n midjobs} in C{root / name} and return at once: see
    L{start_node}, which also waits for it to be ready.
    """
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    socket_path = _socket_dir() / "midjobs.sock"
    argv = [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "--logfile=-", "midjobs",
            "--state-dir", str(directory / "state"),
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--socket", str(socket_path)]
    if config is not None:
        config_path = directory / "midjobs.toml"
        config_path.write_text(config)
        argv += ["--config", str(config_path)]
    if database_url is not None:
        argv += ["--database", database_url]
    if node is not None:
        argv += ["--node", node]
    for plugin in plugins:
        argv += ["--plugin", plugin]
    argv += options
    process, log_start = _popen(argv, directory)
    return Node(name=node or name, root=directory, socket_path=socket_path, argv=argv, process=process,
                log_start=log_start)


def _popen(argv: list[str], directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """
    Run C{argv} in C{directory}, its output appended to the log file there;
    return the process and where its output starts in the log.
    """
    log_path = directory / "twistd.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    env = {**subprocess_env(), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, preexec_fn=_end_with_parent)
    return process, log_start


def restart_node(node: Node, timeout: float = READY_TIMEOUT) -> None:
    """
    Start again a node that has ended, with the same options, state
    directory, socket and port (so a load balancer finds it where it was),
    and wait until it is ready, as L{start_node} does.

    @raise NodeFailed: it ended, or was not ready within C{timeout}; it is
        stopped first.
    """
    if node.process.poll() is None:
        raise RuntimeError(f"node {node.name} still runs")
    node.argv[node.argv.index("--listen") + 1] = f"tcp:{node.port}:interface=127.0.0.1"
    node.process, node.log_start = _popen(node.argv, node.root)
    try:
        node.wait_ready(timeout)
    except NodeFailed:
        node.stop()
        raise


def start_node(root: Path, name: str, *, database_url: str | None = None, node: str | None = None,
               port: int = 0, config: str | None = None, plugins: Sequence[str] = (SAMPLE_SERVICES,),
               options: Sequence[str] = (), timeout: float = READY_TIMEOUT) -> Node:
    """
    Start a node and wait until its C{/_health} answers 200.

    @param root: the directory under which the node gets its own, C{name}.
    @param name: its directory, and its name in the tests when C{node} is not given.
    @param database_url: passed as C{--database} (a node of the cluster on
        that PostgreSQL database); none: SQLite in its state directory.
    @param node: passed as C{--node}.
    @param port: its TCP port; 0 for one the system picks.
    @param config: the text of a TOML configuration file for it (C{--config}).
    @param plugins: the service modules it loads (C{--plugin}).
    @param options: more command-line options.
    @raise NodeFailed: it ended, or was not ready within C{timeout}; it is
        stopped first.
    """
    started = spawn_node(root, name, database_url=database_url, node=node, port=port, config=config,
                         plugins=plugins, options=options)
    try:
        started.wait_ready(timeout)
    except NodeFailed:
        _cleanup(started)
        raise
    return started


def start_nodes(root: Path, names: Sequence[str], *, database_url: str | None = None, config: str | None = None,
                plugins: Sequence[str] = (SAMPLE_SERVICES,), options: Sequence[str] = (),
                timeout: float = READY_TIMEOUT) -> list[Node]:
    """
    Start the nodes C{names} side by side, each as L{start_node} does (on
    ports the system picks; named C{--node <name>} when C{database_url} is
    given); return them once all are ready.
    """
    nodes: list[Node] = []
    try:
        for name in names:
            nodes.append(spawn_node(root, name, database_url=database_url,
                                    node=name if database_url is not None else None,
                                    config=config, plugins=plugins, options=options))
        for started in nodes:
            started.wait_ready(timeout)
    except BaseException:
        for started in nodes:
            _cleanup(started)
        raise
    return nodes


def _cleanup(node: Node) -> None:
    """
    Stop C{node} and remove its socket's directory.
    """
    node.stop()
    shutil.rmtree(node.socket_path.parent, ignore_errors=True)


@attrs.define
class NodeStarter:
    """
    What the C{cluster_nodes} fixture gives a test: call it to start nodes;
    every node it started is stopped at the test's end.
    """

    root: Path
    started: list[Node] = attrs.Factory(list)

    def __call__(self, *names: str, database_url: str | None = None, config: str | None = None,
                 plugins: Sequence[str] = (SAMPLE_SERVICES,), options: Sequence[str] = ()) -> list[Node]:
        """
        Start the nodes C{names} (see L{start_nodes}).
        """
        nodes = start_nodes(self.root, names, database_url=database_url, config=config, plugins=plugins,
                            options=options)
        self.started.extend(nodes)
        return nodes

    def spawn(self, name: str, *, database_url: str | None = None, node: str | None = None, port: int = 0,
              config: str | None = None, plugins: Sequence[str] = (SAMPLE_SERVICES,),
              options: Sequence[str] = ()) -> Node:
        """
        Start one node without waiting for it (see L{spawn_node}): for a
        node expected to fail, or to be waited for with L{Node.wait_ready}.
        """
        spawned = spawn_node(self.root, name, database_url=database_url, node=node, port=port, config=config,
                             plugins=plugins, options=options)
        self.started.append(spawned)
        return spawned

    def stop_all(self) -> None:
        for node in self.started:
            _cleanup(node)


@pytest.fixture
def cluster_nodes(tmp_path: Path) -> Iterator[NodeStarter]:
    """
    Starts nodes for a test (C{cluster_nodes("n1", "n2")}) and stops them,
    SIGTERM then SIGKILL, when it ends.
    """
    starter = NodeStarter(tmp_path / "nodes")
    try:
        yield starter
    finally:
        starter.stop_all()

