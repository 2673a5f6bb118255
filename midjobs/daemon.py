"""
The daemon as a Twisted service: the middleware and one listener per endpoint.

L{Daemon} is what C{twistd midjobs} runs.  On start it reads the
endpoints (and the TLS certificates of C{ssl:} ones), opens the state
directory and database, sets up the services, and only then listens, so the
first connection finds everything ready.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import importlib.metadata
import inspect
import os
import signal
import sqlite3
import sys
import threading
from types import ModuleType
from typing import Any, Callable, Iterable

from twisted.application.service import MultiService, Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint

from .logs import StdlibBridge, logger, set_level

from .backends import IBackends, migrate_database, open_backends
from .auth import UserStore, default_trusted_uids, make_portal
from .config import ConfigError, Settings
from .drain import DrainPhase
from .descriptors import connection_capacity, raise_descriptor_limit
from .http import ConnectionLimits, LimitingReactor, make_site, metrics_site
from .job import JobState
from .middleware import Middleware
from .notify import BackOff, Outbox, WebhookNotifier
from .plugins import BUILTIN_SERVICES
from .service import Service as MidjobsService
from .store import apply_pending_restore
from .store.errors import NewerSchema, Unavailable
from .systemd import SystemdNotifier

__all__ = ["Daemon", "Listener", "load_service_classes", "server_endpoint"]

log = logger(__name__)

ENTRY_POINT_GROUP = "midjobs.services"


def server_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    The server endpoint C{description} names; an C{ssl:} one has read its
    certificate and key.

    @raise ConfigError: C{description} is no endpoint string, or names
        certificate or key files that cannot be read or used.
    """
    try:
        endpoint: IStreamServerEndpoint = serverFromString(reactor, description)  # type: ignore[no-untyped-call]  # not annotated in Twisted
        return endpoint
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        reason = f"{e.strerror or e}{where}"
    except (IndexError, KeyError) as e:
        if not description.lower().startswith("systemd:"):
            raise
        reason = (
            f"systemd passed no such socket ({e}): start the daemon through its .socket unit, "
            "whose sockets come in LISTEN_FDS and are named by FileDescriptorName="
        )
    except Exception as e:
        reason = str(e) or type(e).__name__
        if type(e).__module__.startswith("OpenSSL"):
            reason = f"the TLS certificate or private key is not usable: {reason}"
    raise ConfigError(f"cannot listen on {description}: {reason}")


class Listener(Service):
    """
    Listens on one endpoint while running.

    @ivar description: the endpoint string.
    @ivar port: the listening port once L{listening} has fired.
    """

    def __init__(
        self, reactor: Any, description: str, factory: Any, endpoint: IStreamServerEndpoint | None = None
    ) -> None:
        """
        @param endpoint: the endpoint C{description} names, if already made.
        """
        self._reactor = reactor
        self.description = description
        self.factory = factory
        self._endpoint = endpoint
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # not annotated in Twisted
        endpoint = self._endpoint or serverFromString(self._reactor, self.description)  # type: ignore[no-untyped-call]  # not annotated in Twisted
        self.listening = endpoint.listen(self.factory)
        self.listening.addCallback(self._listened)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        log.info("Listening on {endpoint} ({address})", endpoint=self.description, address=port.getHost())
        return port

    def stopService(self) -> Deferred[None] | None:
        """
        Stop listening (once: the drain stops listeners before the daemon stops).
        """
        super().stopService()  # type: ignore[no-untyped-call]  # not annotated in Twisted
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None

    def state(self) -> dict[str, Any]:
        """
        The listener as C{/_health?full} shows it: its C{endpoint} and
        whether it is C{listening}.
        """
        return {"endpoint": self.description, "listening": self.port is not None}


def _services_of(module: ModuleType) -> list[type[MidjobsService]]:
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, MidjobsService)
        and value.__module__ == module.__name__
        and getattr(value, "namespace", None)
    ]


def load_service_classes(modules: Iterable[str]) -> list[type[MidjobsService]]:
    """
    The C{Service} classes of the named modules and of the C{midjobs.services}
    entry points (each a module or a class).
    """
    classes: list[type[MidjobsService]] = []
    for name in modules:
        classes.extend(_services_of(importlib.import_module(name)))
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry_point.load()
        classes.extend(_services_of(loaded) if isinstance(loaded, ModuleType) else [loaded])
    return classes


class Daemon(MultiService):
    """
    One midjobs daemon.

    @ivar ready: fires when every listener listens (with the daemon), or fails
        if the daemon could not start.
    @ivar middleware: the middleware, once started.
    @ivar site: the twisted.web site every listener serves, once started.
    @ivar connection_limits: the connection caps of the TCP and TLS
        listeners, once started.
    @ivar systemd: tells systemd that the daemon is ready, how it is and
        that it stops, and beats the watchdog's heart (L{None} when no
        service manager listens).
    """

    def __init__(self, settings: Settings, reactor: Any = None, systemd: SystemdNotifier | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # not annotated in Twisted
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.settings = settings
        self.middleware: Middleware | None = None
        self.site: Any = None
        self.connection_limits: ConnectionLimits | None = None
        self.listeners: list[Listener] = []
        self.ready: Deferred[Daemon] = Deferred()
        self.systemd = systemd
        #: Where the daemon keeps its state, once opened (L{IBackends}).
        self.backends: IBackends | None = None
        #: Python's logging into the daemon's log, while the daemon runs.
        self._stdlib_bridge: StdlibBridge | None = None
        #: Tells the webhooks of jobs' ends (L{None} when none are configured).
        self.notifier: WebhookNotifier | None = None
        #: The drain, once the reactor's shutdown began it (L{drain}).
        self._draining: Deferred[None] | None = None
        self._shutdown_trigger: Any = None

    def startService(self) -> None:
        Service.startService(self)  # type: ignore[no-untyped-call]  # not annotated in Twisted
        if self.systemd is not None:
            self.systemd.start()
        # Added before twistd adds the trigger that stops the application,
        # so it runs first: the daemon's stop then waits for the drain.
        self._shutdown_trigger = self.reactor.addSystemEventTrigger("before", "shutdown", self.drain)
        d = ensureDeferred(self._start())
        d.addCallbacks(self._started, self._failed_to_start)

    def _started(self, daemon: Daemon) -> None:
        if self.systemd is not None:
            self.systemd.ready(self.status)
        self.ready.callback(daemon)

    def status(self) -> str:
        """
        How the daemon is, in a few words: its running and waiting jobs,
        and whether it stops; while it drains, the jobs it waits for and the
        seconds they have left (C{systemctl status} shows it).
        """
        running = waiting = 0
        if self.middleware is not None:
            for job in self.middleware.jobs:
                if job.state is JobState.RUNNING:
                    running += 1
                elif job.state is JobState.WAITING:
                    waiting += 1
        jobs = f"{running} job{'' if running == 1 else 's'} running, {waiting} waiting"
        drain = self.middleware.drain if self.middleware is not None else None
        if drain is not None and drain.phase is DrainPhase.DRAINING and drain.jobs_left:
            left, seconds = drain.jobs_left, int(-(-(drain.seconds_left or 0) // 1))
            return f"Draining: {left} job{'' if left == 1 else 's'} running, {seconds} s left"
        stopping = not self.running or (drain is not None and not drain.accepting)
        return f"Stopping: {jobs}" if stopping else jobs

    def _failed_to_start(self, failure: Any) -> None:
        if failure.check(ConfigError, NewerSchema, Unavailable):
            # What the operator must change, or a database out of reach: one line.
            log.critical("midjobs could not start: {reason}", reason=str(failure.value))
        elif failure.check(OSError, sqlite3.Error):
            # The state directory or disk, not the code: one line says it all.
            log.critical("midjobs could not start: {reason}", reason=_state_error(failure.value, self.settings))
        else:
            log.failure("midjobs could not start", failure)
        self.ready.errback(failure)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)
        # twistd itself always exits 0: once it is done, exit 1 instead.
        atexit.register(_exit_with, 1)

    async def _start(self) -> Daemon:
        settings = self.settings
        state_dir = settings.state_path
        set_level(settings.log_level)
        self._stdlib_bridge = StdlibBridge.install()
        # Bad endpoints or certificates stop the start before anything is touched.
        socket = quoteStringArgument(settings.socket_path)  # type: ignore[no-untyped-call]  # not annotated in Twisted
        descriptions = [*settings.listen_endpoints(), f"unix:{socket}:mode=600:lockfile=1"]
        # TCP and TLS listeners count their connections; UNIX ones never do.
        limits = self.connection_limits = self._connection_limits()
        listening_reactor = LimitingReactor(self.reactor, limits)
        endpoints = [(d, server_endpoint(listening_reactor, d)) for d in descriptions]
        metrics_endpoint = (
            server_endpoint(listening_reactor, settings.metrics_listen) if settings.metrics_listen else None
        )
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.reactor.suggestThreadPoolSize(settings.threads)
        apply_pending_restore(state_dir)
        if settings.migrate_only:
            versions = await migrate_database(settings, self.reactor)
            log.info(
                "The database {database} is up to date ({versions}); --migrate-only: stopping",
                database=settings.database_display,
                versions=", ".join(f"{part} {version}" for part, version in sorted(versions.items())),
            )
            self.reactor.callWhenRunning(self.reactor.stop)
            return self
        backends = self.backends = await open_backends(settings, self.reactor)
        if settings.webhooks:
            # Started before any job can end (a service's setup may start one).
            self.notifier = _notifier(self.reactor, backends.local_database, settings)
            await self.notifier.start()
        users = UserStore(backends.database)
        history = backends.history
        middleware = Middleware(
            self.reactor,
            state_dir,
            portal=make_portal(users, default_trusted_uids(), tokens=backends.tokens),
            users=users,
            keep_finished_jobs=settings.keep_finished_jobs,
            settings=settings,
            job_store=history.store if history is not None else None,
            job_ids=backends.job_ids,
            locks=backends.locks,
            node=settings.node,
            store_check=backends.store_check,
        )
        middleware.add_services(BUILTIN_SERVICES)
        middleware.add_services(load_service_classes(settings.plugins))
        notifier = self.notifier
        if notifier is not None:
            notifier.counts = middleware.metrics
            middleware.metrics.webhooks_pending = lambda: notifier.pending
            middleware.jobs.observe(notifier)
        await backends.attach(middleware)
        await middleware.start()
        self.middleware = middleware
        limits.counts = middleware.metrics

        middleware.health.listeners = lambda: [listener.state() for listener in self.listeners]
        site = self.site = make_site(middleware)
        listeners = [Listener(self.reactor, description, site, endpoint) for description, endpoint in endpoints]
        if metrics_endpoint is not None:
            assert settings.metrics_listen is not None
            listeners.append(Listener(self.reactor, settings.metrics_listen, metrics_site(middleware), metrics_endpoint))
        await self._listen(listeners)
        await backends.listening(_bound_ports(listeners))
        # What was made to start (modules, services, settings) lives as long
        # as the daemon: out of the collector's sight, a full collection does
        # not walk it again and again while jobs come and go.
        gc.freeze()
        log.info("midjobs is ready, state in {state_dir}", state_dir=str(state_dir))
        return self

    async def _listen(self, listeners: list[Listener]) -> None:
        """
        Start C{listeners} and wait until every one listens: the daemon is
        ready only then.
        """
        for listener in listeners:
            self.listeners.append(listener)
            listener.setServiceParent(self)  # type: ignore[no-untyped-call]  # not annotated in Twisted
        for listener in listeners:
            assert listener.listening is not None  # set as it started, just now
            await listener.listening

    def _connection_limits(self) -> ConnectionLimits:
        """
        The caps of the settings, lowered to fit under the descriptor limit
        (raised to the hard one first) with a reserve for everything else.
        """
        settings = self.settings
        descriptors = raise_descriptor_limit()
        capacity = connection_capacity(descriptors)
        total = settings.max_connections
        if total > capacity:
            log.warn(
                "[limits] connections = {configured} does not fit under the limit of {descriptors} open files "
                "(RLIMIT_NOFILE, LimitNOFILE in the systemd unit): at most {capacity} connections instead",
                configured=total,
                descriptors=descriptors,
                capacity=capacity,
            )
            total = capacity
        return ConnectionLimits(self.reactor, total, min(settings.max_connections_per_address, total))

    def drain(self) -> Deferred[None]:
        """
        Stop taking connections and jobs, give the running jobs up to
        C{drain_timeout} seconds to end, then abort those left and wait until
        their ends are recorded (L{midjobs.drain}).  A second C{SIGTERM} (or
        C{SIGINT}) meanwhile cuts it short.

        The reactor's shutdown (C{SIGTERM} to twistd) calls it; the daemon's
        stop waits for it.  A daemon stopped without a shutdown (embedded,
        in tests) aborts its jobs at once.

        @return: fires when the jobs have ended; again the same drain if
            called again.
        """
        if self._draining is None:
            self._draining = ensureDeferred(self._drain())
            self._draining.addErrback(lambda f: log.failure("The drain failed", f))
        return self._draining

    async def _drain(self) -> None:
        middleware = self.middleware
        if middleware is None or not self.running:
            return
        drain = middleware.drain
        # Before anyone is told the daemon stops: a second signal then always cuts the drain short.
        restore = _on_signals((signal.SIGTERM, signal.SIGINT), self.reactor, drain.cut_short)
        try:
            jobs_ended = drain.begin(self.settings.drain_timeout)
            if self.systemd is not None:
                self.systemd.stopping()
            # New connections are refused from now on; those open stay, to follow their jobs.
            await gatherResults([maybeDeferred(listener.stopService) for listener in self.listeners])
            await jobs_ended
            await drain.abort_rest()
        finally:
            drain.finish()
            restore()
        log.info("Drained: every job has ended")

    async def _stop(self) -> None:
        draining = self._draining
        if draining is None and self._shutdown_trigger is not None:
            self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
        self._shutdown_trigger = None
        listeners_stopped: Deferred[object] = MultiService.stopService(self)  # type: ignore[no-untyped-call]  # not annotated in Twisted; not running from here on
        if self.systemd is not None and draining is None:
            self.systemd.stopping()
        try:
            # The drain runs inside: the heartbeat goes on during it.
            if draining is not None:
                await draining
            await listeners_stopped
            if self.middleware is not None:
                await self.middleware.stop()
            if self.notifier is not None:
                # Pending notifications stay in the outbox, for the next start.
                await self.notifier.stop()
            if self.backends is not None:
                await self.backends.stop()
        finally:
            # The heartbeat goes on until everything is closed: a long stop is no hung one.
            if self.systemd is not None:
                self.systemd.stop()
            if self._stdlib_bridge is not None:
                self._stdlib_bridge.uninstall()
                self._stdlib_bridge = None

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())


def _bound_ports(listeners: Iterable[Listener]) -> dict[str, int]:
    """
    The port each TCP or TLS listener got, by its endpoint string.
    """
    bound: dict[str, int] = {}
    for listener in listeners:
        host = listener.port.getHost() if listener.port is not None else None
        if isinstance(host, (IPv4Address, IPv6Address)):
            bound[listener.description] = host.port
    return bound


def _notifier(reactor: Any, database: Any, settings: Settings) -> WebhookNotifier:
    """
    The notifier of the configured webhooks, its outbox in the daemon's database.
    """
    backoff = BackOff(
        first=settings.notify_retry_delay,
        maximum=max(settings.notify_retry_delay, settings.notify_retry_max_delay),
        attempts=settings.notify_attempts,
        give_up_after=settings.notify_retry_for,
    )
    return WebhookNotifier(
        reactor,
        Outbox(database),
        settings.webhooks,
        outbox_limit=settings.notify_outbox,
        concurrency=settings.notify_deliveries,
        backoff=backoff,
    )


def _on_signals(signals: Iterable[int], reactor: Any, handler: Callable[[str], None]) -> Callable[[], None]:
    """
    Call C{handler(name of the signal)} on the reactor's thread when one of
    C{signals} comes, until the returned function restores the handlers
    there were before.  Only the main thread may set signal handlers:
    elsewhere, nothing is done.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def received(number: int, frame: Any) -> None:
        # Signal-safe: callFromThread only queues the call and wakes the reactor.
        reactor.callFromThread(handler, signal.Signals(number).name)

    previous = {number: signal.signal(number, received) for number in signals}

    def restore() -> None:
        for number, before in previous.items():
            signal.signal(number, before if before is not None else signal.SIG_DFL)

    return restore


def _state_error(error: Exception, settings: Settings) -> str:
    """
    What went wrong with the state directory or its database, in one line.
    """
    if isinstance(error, sqlite3.Error):
        return f"cannot use the database {settings.state_path / 'midjobs.db'}: {error}"
    assert isinstance(error, OSError)
    reason = error.strerror or str(error)
    where = f" ({error.filename})" if error.filename else ""
    return f"cannot use the state directory {settings.state_dir}: {reason}{where}"


def _exit_with(status: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
