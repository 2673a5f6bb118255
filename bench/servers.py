"""
The benchmarks' server subprocesses: started with a log file, polled until
they listen, and ended with them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from typing import Any

from twisted.internet.task import deferLater

__all__ = ["HOST", "Server"]

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """
    In a child, before exec: get SIGTERM if this benchmark dies (Linux), so
    that no server outlives it.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Server:
    """
    A server subprocess, its log, and a way to end it.
    """

    def __init__(self, name: str, argv: list[str], log_path: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    async def wait_listening(self, reactor: Any, port: int, paths: tuple[str, ...] = (), timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if all(os.path.exists(p) for p in paths):
                try:
                    socket.create_connection((HOST, port), timeout=0.5).close()
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not listening on {HOST}:{port} after {timeout}s:\n{self.log_tail()}")
            await deferLater(reactor, 0.05, lambda: None)

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
