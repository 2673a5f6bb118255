"""
The metrics of one daemon, in a C{prometheus_client} registry of its own.

Counters are incremented where things happen (through L{ICounts} below the
middleware, through L{Metrics} methods above it); gauges are read from the
daemon's own state when Prometheus scrapes (L{_StateCollector}), so they
cost nothing between scrapes and can never drift.  What is counted for every
call and every job (calls, jobs started and ended, job durations) is tallied
in plain integers on the reactor thread and turned into metrics when
Prometheus scrapes (L{_Tallies}): a C{prometheus_client} counter takes a
lock and checks its labels on each increment, which cost several percent of
a trivial job.

Every label value comes from a fixed set or from what the daemon's code
registered: method names of registered methods (C{"<unknown>"} otherwise),
lock names declared by a method (a lock named from a job's arguments is
labelled with its method's name), the limits of L{LIMITS}, the outcomes of
L{DELIVERY_OUTCOMES} (never a webhook's URL).
"""

from __future__ import annotations

import bisect
import weakref
from typing import Any, Callable, Container, Final, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from zope.interface import implementer

from ..job import Job
from ..lifecycle import IJobObserver, JobRecord, JobState
from ..notify._interfaces import DELIVERY_OUTCOMES, IDeliveryCounts
from ..counts import LIMITS, ICounts
from ._lag import ReactorLag

__all__ = ["Metrics", "UNKNOWN_METHOD", "OUTCOMES", "TRANSPORTS"]

#: The C{method} label of a call to a method that is not registered.
UNKNOWN_METHOD: Final = "<unknown>"
#: The C{lock} label of a waiting job that takes no lock.
NO_LOCK: Final = "<none>"
#: The C{outcome} labels of C{midjobs_rpc_calls_total}.
OUTCOMES: Final = ("success", "error")
#: The C{transport} labels of C{midjobs_connections}.
TRANSPORTS: Final = ("tcp", "tls", "unix")

#: Seconds: from a trivial job to a day-long one.
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, float("inf"))
#: Seconds: a commit of the job history, from a fraction of a millisecond to a stalled disk.
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, float("inf"))


def lock_label(job: Job) -> str:
    """
    The C{lock} label of C{job}: the lock name its method declares, its
    method's name if the lock is named from the job's arguments (which a
    caller chooses), or L{NO_LOCK}.
    """
    lock = job.options.lock
    if lock is None:
        return NO_LOCK
    return lock if isinstance(lock, str) else job.method


@implementer(ICounts, IDeliveryCounts, IJobObserver)
class Metrics:
    """
    Every metric of one daemon.

    @ivar registry: the C{CollectorRegistry} C{/metrics} serves.
    @ivar reactor_lag: the timer that measures how late the reactor is.
    @ivar webhooks_pending: reads how many webhook notifications wait in
        the outbox (C{None}: no webhooks are configured).
    """

    def __init__(
        self,
        reactor: Any,
        jobs: Callable[[], Iterable[Job]],
        methods: Container[str],
    ) -> None:
        """
        @param jobs: the jobs the daemon lists now (running, waiting, ended).
        @param methods: the names of the registered methods (looked up, never copied).
        """
        self._methods = methods
        self._connections: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        #: The jobs counted as started whose end is not yet counted.
        self._live: set[int] = set()
        registry = self.registry = CollectorRegistry()
        #: Jobs started, by method; jobs ended, by method and state; calls, by method and outcome.
        self._started: dict[str, int] = {}
        self._finished: dict[tuple[str, str], int] = {}
        self._calls: dict[tuple[str, str], int] = {}
        #: Per method: the count of job durations in each of L{_JOB_BUCKETS}, and their sum.
        self._durations: dict[str, tuple[list[int], list[float]]] = {}
        registry.register(_Tallies(self))
        self.upload_bytes = Counter(
            "midjobs_upload_bytes", "Bytes of uploaded files handed to jobs.", registry=registry
        )
        self.download_bytes = Counter(
            "midjobs_download_bytes", "Bytes of downloads sent to clients.", registry=registry
        )
        self.logins_failed = Counter("midjobs_logins_failed", "Logins refused.", registry=registry)
        self.limit_hits = Counter(
            "midjobs_limit_hits", "Times a client ran into a limit (docs/limits.rst).", ["limit"], registry=registry
        )
        self.history_commit = Histogram(
            "midjobs_history_commit_seconds",
            "Seconds one write (one transaction) of the job history took.",
            buckets=_COMMIT_BUCKETS,
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "midjobs_webhook_deliveries",
            "Webhook notifications: attempts delivered or failed, notifications given up or dropped unsent.",
            ["outcome"],
            registry=registry,
        )
        self._deliveries = {outcome: self.webhook_deliveries.labels(outcome) for outcome in DELIVERY_OUTCOMES}
        self.webhooks_pending: Callable[[], int | None] = lambda: None
        self.reactor_lag = ReactorLag(reactor, registry)
        registry.register(_StateCollector(jobs, self._connections, lambda: self.webhooks_pending()))
        ProcessCollector(registry=registry)
        # Every fixed label value is there from the start, at 0: rate() needs a first sample.
        self._limits = {limit: self.limit_hits.labels(limit) for limit in LIMITS}
        self._upload_inc = self.upload_bytes.inc
        self._download_inc = self.download_bytes.inc
        self._failed_inc = self.logins_failed.inc

    def start(self) -> None:
        """
        Start measuring the reactor's lag.
        """
        self.reactor_lag.start()

    def stop(self) -> None:
        self.reactor_lag.stop()

    # ICounts

    def limit_hit(self, limit: str) -> None:
        self._limits[limit].inc()

    def login_failed(self) -> None:
        self._failed_inc()

    def uploaded(self, size: int) -> None:
        self._upload_inc(size)

    def downloaded(self, size: int) -> None:
        self._download_inc(size)

    # IDeliveryCounts

    def webhook_delivery(self, outcome: str) -> None:
        self._deliveries[outcome].inc()

    # The job lifecycle (IJobObserver).

    def listening(self) -> bool:
        return False

    def added(self, job: Job, record: JobRecord | None) -> None:
        """
        C{job} was queued (it waits for its lock or runs already).  A
        transient job is not told of: it is not counted.
        """
        self._live.add(job.id)
        self._started[job.method] = self._started.get(job.method, 0) + 1

    def changed(self, job: Job, record: JobRecord | None) -> None:
        pass

    def ended(self, job: Job, record: JobRecord) -> None:
        """
        C{job} ended: count its end and its duration.
        """
        if job.id not in self._live:
            return
        self._live.discard(job.id)
        method = job.method
        key = (method, record["state"])
        self._finished[key] = self._finished.get(key, 0) + 1
        if job.time_finished is not None:
            seconds = max(0.0, (job.time_finished - job.time_started).total_seconds())
            tally = self._durations.get(method)
            if tally is None:
                tally = self._durations[method] = ([0] * len(_JOB_BUCKETS), [0.0])
            tally[0][bisect.bisect_left(_JOB_BUCKETS, seconds)] += 1
            tally[1][0] += seconds

    def job_refused(self, job: Job) -> None:
        """
        C{job} could not be recorded: it is being aborted, and its observers
        never hear of it.  Counted as started and ended C{ABORTED}, without
        a duration.
        """
        self._started[job.method] = self._started.get(job.method, 0) + 1
        key = (job.method, JobState.ABORTED.value)
        self._finished[key] = self._finished.get(key, 0) + 1

    # Calls and connections.

    def rpc_call(self, method: str, outcome: str) -> None:
        """
        A WebSocket call of C{method} was answered with C{outcome} (one of
        L{OUTCOMES}); a method that is not registered counts as L{UNKNOWN_METHOD}.
        """
        key = (method, outcome)
        count = self._calls.get(key)
        if count is None:
            if outcome not in OUTCOMES:
                raise ValueError(f"Unknown outcome {outcome!r}")
            if method not in self._methods:
                key = (UNKNOWN_METHOD, outcome)
            count = self._calls.get(key, 0)
        self._calls[key] = count + 1

    def connection_opened(self, session: Any, transport: str) -> None:
        """
        Count C{session} (a WebSocket's L{midjobs.interfaces.ISession}) among
        the connections while it is open (C{session.open}), as logged in
        while C{session.user} is set.  C{transport} is one of L{TRANSPORTS}.
        """
        if transport not in TRANSPORTS:
            raise ValueError(f"Unknown transport {transport!r}")
        self._connections[session] = transport

    def observe_commit(self, seconds: float) -> None:
        """
        One write of the job history took C{seconds}.
        """
        self.history_commit.observe(seconds)


class _Tallies(Collector):
    """
    The counters tallied in plain integers by L{Metrics}, as metrics, at each scrape.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        family = CounterMetricFamily("midjobs_jobs_started", "Jobs created by a call, by method.", labels=["method"])
        for method, count in sorted(metrics._started.items()):
            family.add_metric([method], count)
        yield family
        family = CounterMetricFamily(
            "midjobs_jobs_finished", "Jobs ended, by method and final state.", labels=["method", "state"]
        )
        for key, count in sorted(metrics._finished.items()):
            family.add_metric(list(key), count)
        yield family
        histogram = HistogramMetricFamily(
            "midjobs_job_duration_seconds",
            "Seconds from a job's creation to its end (waiting for its lock included), by method.",
            labels=["method"],
        )
        for method, (counts, total) in sorted(metrics._durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(_JOB_BUCKETS, counts):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
            histogram.add_metric([method], buckets, sum_value=total[0])
        yield histogram
        family = CounterMetricFamily(
            "midjobs_rpc_calls", "WebSocket (JSON-RPC) calls answered, by method and outcome.", labels=["method", "outcome"]
        )
        for key, count in sorted(metrics._calls.items()):
            family.add_metric(list(key), count)
        yield family


class _StateCollector(Collector):
    """
    The gauges, read from the daemon's state at each scrape.
    """

    def __init__(
        self,
        jobs: Callable[[], Iterable[Job]],
        connections: weakref.WeakKeyDictionary[Any, str],
        webhooks_pending: Callable[[], int | None],
    ) -> None:
        self._jobs = jobs
        self._connections = connections
        self._webhooks_pending = webhooks_pending

    def collect(self) -> Iterator[GaugeMetricFamily]:
        running = 0
        waiting: dict[str, int] = {}
        for job in self._jobs():
            state = job.state
            if state is JobState.RUNNING:
                running += 1
            elif state is JobState.WAITING:
                label = lock_label(job)
                waiting[label] = waiting.get(label, 0) + 1
        yield GaugeMetricFamily("midjobs_jobs_running", "Jobs running now.", value=running)
        family = GaugeMetricFamily(
            "midjobs_jobs_waiting",
            "Jobs waiting for their lock now, by lock (a lock named from arguments: by method).",
            labels=["lock"],
        )
        for label, count in sorted(waiting.items()):
            family.add_metric([label], count)
        yield family
        counts = {(t, a): 0 for t in TRANSPORTS for a in ("true", "false")}
        for session, transport in list(self._connections.items()):
            if getattr(session, "open", False):
                counts[transport, "true" if session.user is not None else "false"] += 1
        family = GaugeMetricFamily(
            "midjobs_connections",
            "WebSocket connections open now, by transport and whether they are logged in.",
            labels=["transport", "authenticated"],
        )
        for (transport, authenticated), count in counts.items():
            family.add_metric([transport, authenticated], count)
        yield family
        yield GaugeMetricFamily(
            "midjobs_webhook_pending",
            "Webhook notifications waiting in the outbox to be delivered.",
            value=self._webhooks_pending() or 0,
        )
