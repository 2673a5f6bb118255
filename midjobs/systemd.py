"""
Telling systemd how the daemon is: C{Type=notify} and C{WatchdogSec=}.

systemd hands a service of C{Type=notify} the address of a datagram socket
in C{$NOTIFY_SOCKET}: a path, or an abstract name written with a leading
C{@}.  The service sends it datagrams of newline-separated C{KEY=VALUE}
assignments (C{sd_notify(3)}): C{READY=1} once it serves, C{STOPPING=1}
when it begins to stop, C{STATUS=...} for C{systemctl status}, and, when
the unit sets C{WatchdogSec=}, C{WATCHDOG=1} at least every
C{$WATCHDOG_USEC} microseconds, or systemd kills and restarts it.

L{NotifySocket} is that protocol (Twisted has none, and the small PyPI
packages for it are unmaintained or need libsystemd's headers).
L{SystemdNotifier} is the daemon's side: its heartbeat is a
L{LoopingCall} at half the watchdog's interval, so it beats only while the
reactor turns, and a hung reactor is restarted.

Socket activation needs nothing here: the daemon listens on C{systemd:}
endpoint strings, which Twisted reads from C{$LISTEN_FDS}.
"""

from __future__ import annotations

import os
import socket
from typing import Callable, MutableMapping

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from .logs import logger

__all__ = ["NotifySocket", "SystemdNotifier", "watchdog_interval"]

log = logger(__name__)

#: The variables systemd sets for the notify protocol; read once, then
#: removed, so that the processes jobs start do not talk to systemd as us.
_NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class NotifySocket:
    """
    The datagram socket of the service manager (C{$NOTIFY_SOCKET}).

    Sends never block: a datagram that cannot be sent at once is dropped
    and logged (the first failure only: a manager that is gone would
    otherwise fill the log with one line a heartbeat).

    @ivar address: the socket's address as C{sendto} takes it (an abstract
        name starts with a NUL byte).
    """

    def __init__(self, address: str) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._failed = False

    @classmethod
    def from_address(cls, address: str | None) -> NotifySocket | None:
        """
        The socket C{$NOTIFY_SOCKET} names, or L{None} if it is unset or
        of a kind other than a UNIX socket (such as C{vsock:}), which is
        logged.
        """
        if not address:
            return None
        if not address.startswith(("/", "@")):
            log.warn("NOTIFY_SOCKET={address} is no UNIX socket: systemd is not told how midjobs is", address=address)
            return None
        return cls(address)

    def send(self, *assignments: str) -> bool:
        """
        Send C{assignments} (C{"READY=1"}, C{"STATUS=..."}) in one datagram.

        @return: whether it was sent.
        """
        # A value is one line: a newline would start an assignment of its own.
        lines = (assignment.replace("\n", " ") for assignment in assignments)
        try:
            self._socket.sendto("\n".join(lines).encode("utf-8"), self.address)
        except OSError as e:
            if not self._failed:
                self._failed = True
                log.warn(
                    "Cannot tell systemd {assignments} at NOTIFY_SOCKET: {error}",
                    assignments=", ".join(a.partition("=")[0] for a in assignments), error=e.strerror or str(e),
                )
            return False
        return True

    def close(self) -> None:
        self._socket.close()


def watchdog_interval(environ: MutableMapping[str, str]) -> float | None:
    """
    The watchdog's interval in seconds (C{$WATCHDOG_USEC}), or L{None} if
    there is none for this process (unset, not a positive number, or
    C{$WATCHDOG_PID} names another process).
    """
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


class SystemdNotifier:
    """
    Tells systemd that the daemon is ready, how it is, and that it stops;
    beats the watchdog's heart from the reactor while it runs.

    Its status is read from a callable every C{status_interval} seconds
    and sent only when it changed: a busy daemon costs systemd at most one
    datagram a period, whatever its jobs do.

    @ivar socket: where the notifications go.
    @ivar watchdog: the watchdog's interval in seconds, or L{None}.
    @ivar status_interval: seconds between two looks at the status.
    """

    def __init__(
        self, socket: NotifySocket, clock: IReactorTime, watchdog: float | None = None, status_interval: float = 1.0
    ) -> None:
        self.socket = socket
        self.watchdog = watchdog
        self.status_interval = status_interval
        self._clock = clock
        self._heartbeat: LoopingCall | None = None
        self._status_check: LoopingCall | None = None
        self._status: Callable[[], str] | None = None
        self._sent_status: str | None = None

    @classmethod
    def from_environment(cls, clock: IReactorTime, environ: MutableMapping[str, str] | None = None) -> SystemdNotifier | None:
        """
        The notifier of a process systemd started with C{NOTIFY_SOCKET}, or
        L{None}.  The notify variables are removed from C{environ}
        (C{os.environ} by default).
        """
        if environ is None:
            environ = os.environ
        address = environ.get("NOTIFY_SOCKET")
        watchdog = watchdog_interval(environ)
        for name in _NOTIFY_VARIABLES:
            environ.pop(name, None)
        notify_socket = NotifySocket.from_address(address)
        return cls(notify_socket, clock, watchdog) if notify_socket is not None else None

    def start(self) -> None:
        """
        Start the watchdog's heartbeat, if there is a watchdog.
        """
        if self.watchdog is not None and self._heartbeat is None:
            self._heartbeat = LoopingCall(self.socket.send, "WATCHDOG=1")
            self._heartbeat.clock = self._clock
            self._heartbeat.start(self.watchdog / 2, now=True)

    def ready(self, status: Callable[[], str]) -> None:
        """
        Tell systemd the daemon is ready (C{READY=1}) with C{status()}, and
        from now on whenever C{status()} changes.
        """
        self._status = status
        self._sent_status = status()
        self.socket.send("READY=1", f"STATUS={self._sent_status}")
        self._status_check = LoopingCall(self._check_status)
        self._status_check.clock = self._clock
        self._status_check.start(self.status_interval, now=False)

    def _check_status(self) -> None:
        assert self._status is not None
        status = self._status()
        if status != self._sent_status:
            self._sent_status = status
            self.socket.send(f"STATUS={status}")

    def stopping(self) -> None:
        """
        Tell systemd the daemon begins to stop (C{STOPPING=1}).  The status
        and the heartbeat go on until L{stop}.
        """
        assignments = ["STOPPING=1"]
        if self._status is not None:
            self._sent_status = self._status()
            assignments.append(f"STATUS={self._sent_status}")
        self.socket.send(*assignments)

    def stop(self) -> None:
        """
        Stop the heartbeat and the status (the daemon has stopped).
        """
        for call in (self._heartbeat, self._status_check):
            if call is not None and call.running:
                call.stop()
        self._heartbeat = self._status_check = None
        self.socket.close()
