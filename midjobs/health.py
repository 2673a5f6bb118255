"""
Whether the daemon is healthy: it serves (it is not stopping) and its store
takes writes.

L{StoreCheck} asks the store (a trivial write transaction on the history's
writer, or a file made and removed in the state directory) at most once a
L{CHECK_TTL} seconds, off the reactor thread, and only one question at a
time: a load balancer polling C{/_health} many times a second costs one
check a second.  L{Health} puts that together with the drain
(L{midjobs.drain.Drain}) and the listeners into a L{HealthReport}.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from .drain import Drain, DrainPhase
from .logs import logger

__all__ = ["CHECK_TTL", "Health", "HealthReport", "StoreCheck", "state_dir_writable"]

log = logger(__name__)

#: Seconds an answer of the store check is reused.
CHECK_TTL = 1.0
#: Seconds after which a store check that has not answered counts as failed.
CHECK_TIMEOUT = 10.0

#: What a store check fires with when the store takes writes.
OK = "ok"


def state_dir_writable(reactor: Any, state_dir: Path) -> Deferred[None]:
    """
    Make and remove a file in C{state_dir}, in the reactor's thread pool:
    the store check of a daemon without job history.
    """

    def touch() -> None:
        with tempfile.TemporaryFile(dir=state_dir, prefix=".health-"):
            pass

    return deferToThreadPool(reactor, reactor.getThreadPool(), touch)


class StoreCheck:
    """
    Whether the store takes writes, asked at most once a C{ttl} seconds.

    @param check: starts a check; its Deferred fires if the store takes
        writes, and fails with the reason if not.
    """

    def __init__(
        self, clock: Any, check: Callable[[], Deferred[Any]], ttl: float = CHECK_TTL, timeout: float = CHECK_TIMEOUT
    ) -> None:
        self._clock = clock
        self._check = check
        self._ttl = ttl
        self._timeout = timeout
        #: The last answer (L{OK} or the reason) and when it came.
        self._answer: tuple[str, float] | None = None
        self._asking: list[Deferred[str]] | None = None

    def __call__(self) -> Deferred[str]:
        """
        L{OK}, or why the store takes no writes (never fails).
        """
        if self._answer is not None and self._clock.seconds() - self._answer[1] < self._ttl:
            return succeed(self._answer[0])
        d: Deferred[str] = Deferred()
        if self._asking is not None:
            self._asking.append(d)
            return d
        self._asking = [d]
        try:
            asked = self._check()
        except Exception:
            asked = Deferred()
            asked.errback()
        asked.addTimeout(self._timeout, self._clock)
        asked.addCallbacks(lambda _: OK, self._failed)
        asked.addCallback(self._answered)
        return d

    def _failed(self, failure: Failure) -> str:
        reason = failure.getErrorMessage() or type(failure.value).__name__
        if isinstance(failure.value, TimeoutError) or type(failure.value).__name__ == "TimeoutError":
            reason = f"no answer within {self._timeout:g} s"
        if self._answer is None or self._answer[0] != reason:
            log.error("The store takes no writes: {reason}", reason=reason)
        return reason

    def _answered(self, answer: str) -> None:
        if answer == OK and self._answer is not None and self._answer[0] != OK:
            log.info("The store takes writes again")
        self._answer = (answer, self._clock.seconds())
        waiting, self._asking = self._asking or [], None
        for d in waiting:
            d.callback(answer)


@attrs.frozen
class HealthReport:
    """
    How the daemon is.

    @ivar store: L{OK}, or why the store takes no writes.
    @ivar drain: the drain's status (L{Drain.status}).
    @ivar listeners: each listener's C{endpoint} and whether it is C{listening}.
    """

    store: str
    drain: dict[str, Any]
    listeners: list[dict[str, Any]]

    @property
    def healthy(self) -> bool:
        """
        The daemon serves and its store takes writes.
        """
        return self.store == OK and self.drain["phase"] == DrainPhase.SERVING.name

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else "unavailable",
            "store": self.store,
            "drain": self.drain,
            "listeners": self.listeners,
        }


class Health:
    """
    The daemon's health, from its store check, its drain and its listeners.

    @ivar listeners: returns each listener's C{endpoint} and whether it is
        C{listening} (the daemon sets it; none by default).
    """

    def __init__(self, store: StoreCheck, drain: Drain) -> None:
        self.store = store
        self.drain = drain
        self.listeners: Callable[[], list[dict[str, Any]]] = list

    def report(self) -> Deferred[HealthReport]:
        """
        The daemon's health now (the store as checked within the last second).
        """
        if not self.drain.accepting:
            # Stopping is reason enough: the store is not asked.
            return succeed(HealthReport("not checked: the daemon is stopping", self.drain.status(), self.listeners()))
        return self.store().addCallback(lambda store: HealthReport(store, self.drain.status(), self.listeners()))
