"""
Jobs that run until the test lets them end, loaded into the daemon as a
--plugin module (C{core.bulk}'s lock, C{core.job_update}, deleting jobs).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from midjobs.job import Job
from midjobs.service import Service, job, no_authz_required


class Gates:
    """
    The jobs of C{gated.hold}, by name: which started, in what order, and
    the gate each waits at.
    """

    def __init__(self) -> None:
        #: The names of the jobs that started, in order.
        self.started: list[str] = []
        self._gates: dict[str, Deferred[None]] = {}
        self._waiters: dict[str, list[Deferred[None]]] = {}

    def start(self, name: str) -> Deferred[None]:
        """
        Note that C{name} started; the Deferred fires once it is released.
        """
        self.started.append(name)
        for waiter in self._waiters.pop(name, []):
            waiter.callback(None)
        return self._gate(name)

    def _gate(self, name: str) -> Deferred[None]:
        if name not in self._gates:
            self._gates[name] = Deferred()
        return self._gates[name]

    def started_one(self, name: str) -> Deferred[None]:
        """
        Fires once C{name} has started (at once if it has).
        """
        d: Deferred[None] = Deferred()
        if name in self.started:
            d.callback(None)
        else:
            self._waiters.setdefault(name, []).append(d)
        return d

    def release(self, name: str) -> None:
        gate = self._gate(name)
        if not gate.called:
            gate.callback(None)


class GatedService(Service):
    """
    C{gated.hold(name)} runs until C{gated.release(name)}; any logged-in
    user may call either.  The test watches
    the starts in the daemon's process: C{middleware.services["gated"].gates}.
    """

    namespace = "gated"

    def __init__(self, middleware: Any) -> None:
        super().__init__(middleware)
        self.gates = Gates()

    @no_authz_required
    @job(abortable=True, logs=True)
    async def hold(self, job: Job, name: str, result: Any = None) -> Any:
        """
        Start, write a log line, and end with C{result} once released.
        """
        await job.logs_fd_write(f"{name} started\n".encode())
        await self.gates.start(name)
        return result

    @no_authz_required
    async def release(self, name: str) -> None:
        """
        Let C{hold(name)} end.
        """
        self.gates.release(name)
