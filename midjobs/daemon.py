"""
The daemon as a Twisted service: the middleware and one listener per endpoint.

L{Daemon} is what C{twistd midjobs} runs.  On start it opens the state
directory and database, sets up the services, and only then listens, so the
first connection finds everything ready.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.metadata
import inspect
import os
import sqlite3
import sys
from types import ModuleType
from typing import Any, Iterable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.interfaces import IListeningPort
from .logs import logger, set_level

from .auth import UserStore, default_trusted_uids, make_portal
from .config import Settings
from .http import make_site
from .middleware import Middleware
from .plugins import BUILTIN_SERVICES
from .service import Service as MidjobsService
from .store import JobHistory, SQLiteJobStore, close_database, open_database

__all__ = ["Daemon", "Listener", "load_service_classes"]

log = logger(__name__)

ENTRY_POINT_GROUP = "midjobs.services"


class Listener(Service):
    """
    Listens on one endpoint string while running.

    @ivar port: the listening port once L{listening} has fired.
    """

    def __init__(self, reactor: Any, description: str, factory: Any) -> None:
        self._reactor = reactor
        self.description = description
        self.factory = factory
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] | None = None

    def startService(self) -> None:
        super().startService()
        endpoint = serverFromString(self._reactor, self.description)
        self.listening = endpoint.listen(self.factory)
        self.listening.addCallback(self._listened)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        log.info("Listening on {endpoint} ({address})", endpoint=self.description, address=port.getHost())
        return port

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()
        return None


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
    """

    def __init__(self, settings: Settings, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self.reactor = reactor
        self.settings = settings
        self.middleware: Middleware | None = None
        self.listeners: list[Listener] = []
        self.ready: Deferred[Daemon] = Deferred()
        self._database: Any = None
        self._history: JobHistory | None = None

    def startService(self) -> None:
        Service.startService(self)
        d = ensureDeferred(self._start())
        d.addCallbacks(self.ready.callback, self._failed_to_start)

    def _failed_to_start(self, failure: Any) -> None:
        if failure.check(OSError, sqlite3.Error):
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
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.reactor.suggestThreadPoolSize(settings.threads)
        database_path = str(state_dir / "midjobs.db")
        self._database = open_database(database_path)
        if settings.job_history:
            store = SQLiteJobStore(self._database, self.reactor, reader=open_database(database_path))
            self._history = await JobHistory.open(
                store, self.reactor, state_dir / "jobs", keep_days=settings.keep_days, keep_records=settings.keep_records
            )
        users = UserStore(self._database)
        middleware = Middleware(
            self.reactor,
            state_dir,
            portal=make_portal(users, default_trusted_uids()),
            users=users,
            keep_finished_jobs=settings.keep_finished_jobs,
            settings=settings,
            job_store=self._history.store if self._history is not None else None,
            first_job_id=self._history.next_id if self._history is not None else 1,
        )
        middleware.add_services(BUILTIN_SERVICES)
        middleware.add_services(load_service_classes(settings.plugins))
        await middleware.start()
        self.middleware = middleware

        site = make_site(middleware)
        socket = quoteStringArgument(settings.socket_path)
        for description in [*settings.listen, f"unix:{socket}:mode=600:lockfile=1"]:
            listener = Listener(self.reactor, description, site)
            self.listeners.append(listener)
            listener.setServiceParent(self)
        for listener in self.listeners:
            await listener.listening
        log.info("midjobs is ready, state in {state_dir}", state_dir=str(state_dir))
        return self

    async def _stop(self) -> None:
        await MultiService.stopService(self)  # type: ignore[misc]
        if self.middleware is not None:
            await self.middleware.stop()
        if self._history is not None:
            await self._history.stop()
        if self._database is not None:
            await close_database(self._database)

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())


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
