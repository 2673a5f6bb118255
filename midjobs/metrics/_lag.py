"""
How late the reactor is: a 0.1 s timer, and how much later than asked it fires.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Gauge, Histogram
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["ReactorLag"]

#: Seconds between two measures.
INTERVAL: Final = 0.1

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))


class ReactorLag:
    """
    Every L{INTERVAL} seconds, observes how late the previous timer fired:
    C{midjobs_reactor_lag_seconds} (a histogram) and
    C{midjobs_reactor_lag_last_seconds} (the latest, a gauge).  A reactor
    busy with one long call shows it as lag.
    """

    def __init__(self, reactor: IReactorTime, registry: CollectorRegistry, interval: float = INTERVAL) -> None:
        self._reactor = reactor
        self.interval = interval
        self.histogram = Histogram(
            "midjobs_reactor_lag_seconds",
            f"Seconds a {interval} s timer of the reactor fired late.",
            buckets=_BUCKETS,
            registry=registry,
        )
        self.last = Gauge(
            "midjobs_reactor_lag_last_seconds", "Seconds the latest reactor timer fired late.", registry=registry
        )
        self._call: IDelayedCall | None = None
        self._due = 0.0

    @property
    def running(self) -> bool:
        return self._call is not None

    def start(self) -> None:
        if self._call is None:
            self._schedule()

    def stop(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _schedule(self) -> None:
        self._due = self._reactor.seconds() + self.interval
        self._call = self._reactor.callLater(self.interval, self._fired)

    def _fired(self) -> None:
        late = max(0.0, self._reactor.seconds() - self._due)
        self.histogram.observe(late)
        self.last.set(late)
        self._schedule()
