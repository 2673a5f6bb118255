"""
Services for the protocol tests (tests/test_rpc.py, tests/test_fuzz.py),
loaded into the daemon as a --plugin module beside C{sample_services}.

C{rpc.hold} and C{rpc.gated} wait on a named gate that the test opens with
L{open_gate}, so a test decides exactly when a call in flight ends, without
timers.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from midjobs.job import Job
from midjobs.service import Service, job

#: The gates by name; each waiter gets its own Deferred.
_GATES: dict[str, list[Deferred[None]]] = {}
_OPENED: set[str] = set()


def _wait(name: str) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    if name in _OPENED:
        d.callback(None)
    else:
        _GATES.setdefault(name, []).append(d)
    return d


def open_gate(name: str) -> int:
    """
    Let every call waiting on C{name} (and every later one) go on; return how many were waiting.
    """
    _OPENED.add(name)
    waiters = _GATES.pop(name, [])
    for d in waiters:
        d.callback(None)
    return len(waiters)


def waiting(name: str) -> int:
    """
    How many calls wait on the gate C{name}.
    """
    return len(_GATES.get(name, []))


def reset_gates() -> None:
    """
    Forget every gate; calls still waiting are cancelled.
    """
    _OPENED.clear()
    gates = list(_GATES.values())
    _GATES.clear()
    for waiters in gates:
        for d in waiters:
            d.cancel()


class RpcTestService(Service):
    namespace = "rpc"

    async def hold(self, gate: str) -> str:
        """
        Return C{gate} once the test opens it.
        """
        await _wait(gate)
        return gate

    @job()
    async def gated(self, job: Job, gate: str) -> str:
        """
        A job that ends with C{gate} once the test opens it.
        """
        await _wait(gate)
        return gate

    async def big(self, size: int) -> str:
        """
        A string of C{size} ASCII characters.
        """
        return "x" * size

    async def values(self) -> Any:
        """
        One of each extended value of the wire.
        """
        import datetime

        return {
            "datetime": datetime.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=datetime.timezone.utc),
            "date": datetime.date(2024, 5, 6),
            "time": datetime.time(7, 8, 9),
            "set": {3},
        }
