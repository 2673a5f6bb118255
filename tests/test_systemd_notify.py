"""
C{Type=notify} and C{WatchdogSec=}: the daemon's datagrams to a fake
C{NOTIFY_SOCKET}, in memory with a clock and from a real C{twistd -n
midjobs}.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from midjobs.client import connect
from midjobs.systemd import NotifySocket, SystemdNotifier, watchdog_interval
from test_twistd import twistd

Message = dict[str, str]


class NotifyReceiver(DatagramProtocol):
    """
    The service manager's end of C{NOTIFY_SOCKET}: keeps every datagram as
    a dict of its assignments.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._waiting: list[tuple[Callable[[Message], bool], Deferred[Message]]] = []
        self._ended: BaseException | None = None

    def datagramReceived(self, data: bytes, address: Any) -> None:
        message = dict(line.split("=", 1) for line in data.decode("utf-8").split("\n"))
        self.messages.append(message)
        for waiting in list(self._waiting):
            if waiting[0](message):
                self._waiting.remove(waiting)
                waiting[1].callback(message)

    def wait_for(self, matches: Callable[[Message], bool], timeout: float = 10) -> Deferred[Message]:
        """
        The first message (received already or to come) that C{matches},
        or a timeout after C{timeout} seconds.
        """
        for message in self.messages:
            if matches(message):
                return succeed(message)
        d: Deferred[Message] = Deferred()
        if self._ended is not None:
            d.errback(self._ended)
            return d
        waiting = (matches, d)
        self._waiting.append(waiting)
        d.addTimeout(timeout, reactor, onTimeoutCancel=lambda result, timeout: self._gave_up(waiting, result))
        return d

    def _gave_up(self, waiting: Any, result: Any) -> Any:
        if waiting in self._waiting:
            self._waiting.remove(waiting)
        return Failure(AssertionError(f"no such notification came; those that did: {self.messages}"))

    def sender_ended(self, code: int, process: Any) -> int:
        """
        The sender (a L{test_twistd.Twistd}) ended with C{code}: fail
        whoever still waits, with its output.
        """
        self._ended = AssertionError(f"the daemon ended ({code}); its output:\n{process.output.decode(errors='replace')}")
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            d.errback(self._ended)
        return code

    def sent(self, key: str, value: str | None = None) -> Callable[[Message], bool]:
        return lambda message: key in message and (value is None or message[key] == value)


@pytest_twisted.async_yield_fixture
async def processes() -> Any:
    """
    A list to put the daemons a test starts in: those still running after
    it are killed.
    """
    started: list[Any] = []
    yield started
    for process in started:
        if not process.ended.called:
            process.transport.signalProcess("KILL")
            await process.ended


@pytest.fixture
def notify_receiver(short_tmp: Path) -> Any:
    """
    A fake C{NOTIFY_SOCKET}: C{(receiver, path)}.
    """
    receiver = NotifyReceiver()
    path = str(short_tmp / "notify")
    port = reactor.listenUNIXDatagram(path, receiver)
    yield receiver, path
    port.stopListening()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The protocol, in memory.


def test_notify_socket_sends_assignments_in_one_datagram(short_tmp: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(short_tmp / "notify"))
        notify = NotifySocket.from_address(str(short_tmp / "notify"))
        assert notify is not None
        assert notify.send("READY=1", "STATUS=2 jobs\nrunning")
        assert manager.recv(4096) == b"READY=1\nSTATUS=2 jobs running"
        notify.close()


def test_notify_socket_in_the_abstract_namespace() -> None:
    name = f"midjobs-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        notify = NotifySocket.from_address("@" + name)
        assert notify is not None and notify.send("WATCHDOG=1")
        assert manager.recv(4096) == b"WATCHDOG=1"
        notify.close()


def test_no_notify_socket() -> None:
    assert NotifySocket.from_address(None) is None
    assert NotifySocket.from_address("") is None
    assert NotifySocket.from_address("vsock:2:1234") is None


def test_a_failed_send_is_logged_once(short_tmp: Path, log_events: list[dict[str, Any]]) -> None:
    notify = NotifySocket(str(short_tmp / "nobody-listens"))
    assert not notify.send("WATCHDOG=1")
    assert not notify.send("WATCHDOG=1")
    notify.close()
    warnings = [e for e in log_events if e.get("log_namespace") == "midjobs.systemd" and e["log_level"] is LogLevel.warn]
    assert len(warnings) == 1 and warnings[0]["assignments"] == "WATCHDOG"


def test_from_environment_takes_the_variables_away(short_tmp: Path) -> None:
    environ = {"NOTIFY_SOCKET": str(short_tmp / "notify"), "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    notifier = SystemdNotifier.from_environment(Clock(), environ)
    assert notifier is not None and notifier.watchdog == 30.0
    assert environ == {"PATH": "/bin"}
    notifier.stop()
    assert SystemdNotifier.from_environment(Clock(), {}) is None


def test_watchdog_interval() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "500000"}) == 0.5
    assert watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}) == 0.5
    assert watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


class _Recorder(NotifySocket):
    def __init__(self) -> None:
        self.sent: list[tuple[str, ...]] = []

    def send(self, *assignments: str) -> bool:
        self.sent.append(assignments)
        return True

    def close(self) -> None:
        pass


def test_heartbeat_at_half_the_interval_from_the_clock() -> None:
    clock, sent = Clock(), _Recorder()
    notifier = SystemdNotifier(sent, clock, watchdog=10.0)
    notifier.start()
    assert sent.sent == [("WATCHDOG=1",)]
    clock.advance(4.9)
    assert len(sent.sent) == 1
    clock.advance(0.1)
    assert len(sent.sent) == 2
    clock.pump([5.0] * 4)
    assert sent.sent == [("WATCHDOG=1",)] * 6
    notifier.stop()
    clock.advance(100)
    assert len(sent.sent) == 6 and not clock.getDelayedCalls()


def test_no_watchdog_no_heartbeat() -> None:
    clock, sent = Clock(), _Recorder()
    notifier = SystemdNotifier(sent, clock)
    notifier.start()
    clock.advance(100)
    assert sent.sent == [] and not clock.getDelayedCalls()


def test_status_sent_when_it_changed_at_most_once_a_period() -> None:
    clock, sent = Clock(), _Recorder()
    notifier = SystemdNotifier(sent, clock, status_interval=1.0)
    status = ["0 jobs running"]
    notifier.ready(lambda: status[0])
    assert sent.sent == [("READY=1", "STATUS=0 jobs running")]
    clock.advance(1)
    assert len(sent.sent) == 1  # unchanged: nothing sent
    for n in range(1, 50):  # many changes within one period: one datagram
        status[0] = f"{n} jobs running"
    clock.advance(1)
    assert sent.sent[1:] == [("STATUS=49 jobs running",)]
    status[0] = "Stopping: 49 jobs running"
    notifier.stopping()
    assert sent.sent[2:] == [("STOPPING=1", "STATUS=Stopping: 49 jobs running")]
    clock.advance(1)
    assert len(sent.sent) == 3
    notifier.stop()
    assert not clock.getDelayedCalls()


# A real daemon.


@pytest_twisted.ensureDeferred
async def test_twistd_tells_systemd(tmp_path: Path, short_tmp: Path, notify_receiver: Any, processes: list[Any]) -> None:
    receiver, notify_path = notify_receiver
    port = free_port()
    sock = short_tmp / "midjobs.sock"
    process = twistd(
        "--state-dir", str(tmp_path / "state"),
        "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--socket", str(sock),
        "--plugin", "sample_services",
        path=tmp_path,
        env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "400000"},
    )
    processes.append(process)
    process.ready.addErrback(lambda failure: None)
    process.ended.addCallback(receiver.sender_ended, process)

    ready = await receiver.wait_for(receiver.sent("READY"))
    # Every listener accepts by then: the first connection finds them.
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    assert os.path.exists(sock)
    assert ready == {"READY": "1", "STATUS": "0 jobs running, 0 waiting"}

    # Heartbeats from the reactor, at half the watchdog's interval.
    await receiver.wait_for(lambda message: sum("WATCHDOG" in m for m in receiver.messages) >= 3)
    assert all(m == {"WATCHDOG": "1"} for m in receiver.messages if "WATCHDOG" in m)

    # The status follows the jobs.
    client = await connect(f"ws+unix://{sock}", reactor=reactor)
    try:
        job = client.call_job("core.job_test", {"sleep": 1.5})
        await receiver.wait_for(receiver.sent("STATUS", "1 job running, 0 waiting"))
        assert await job is True
        await receiver.wait_for(lambda message: message == {"STATUS": "0 jobs running, 0 waiting"})
    finally:
        await client.close()

    process.transport.signalProcess(signal.SIGTERM)
    stopping = await receiver.wait_for(receiver.sent("STOPPING"))
    assert stopping == {"STOPPING": "1", "STATUS": "Stopping: 0 jobs running, 0 waiting"}
    assert await process.ended == -signal.SIGTERM
    # Nothing but these kinds was said, and READY only once.
    assert {key for message in receiver.messages for key in message} == {"READY", "STATUS", "WATCHDOG", "STOPPING"}
    assert sum("READY" in message for message in receiver.messages) == 1


@pytest_twisted.ensureDeferred
async def test_no_notify_socket_no_notifications(tmp_path: Path, short_tmp: Path, processes: list[Any]) -> None:
    process = twistd(
        "--state-dir", str(tmp_path / "state"),
        "--listen", "tcp:0:interface=127.0.0.1",
        "--socket", str(short_tmp / "midjobs.sock"),
        path=tmp_path,
        env={"WATCHDOG_USEC": "100000"},
    )
    processes.append(process)
    await process.ready
    process.transport.signalProcess(signal.SIGTERM)
    assert await process.ended == -signal.SIGTERM
    assert b"NOTIFY_SOCKET" not in process.output and b"Traceback" not in process.output
