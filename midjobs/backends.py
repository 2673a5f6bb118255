"""
Where a daemon keeps its state: L{open_backends}.

Without C{[database] url} everything is in the state directory: one SQLite
file, the job logs beside it.  With a C{postgresql://} URL the daemon is a
node of a cluster: the catalogue (users, API keys, tokens), the job records
and their ids, the job locks and the nodes themselves are in that database,
shared with the other nodes; the webhook outbox, the job log files and the
upload spools stay in this node's state directory (C{docs/cluster.rst}).

The daemon builds its middleware from what L{IBackends} offers, then
L{IBackends.attach}es it: a node starts hearing of the other nodes' jobs
only then.  Nothing outside this module asks which engine it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.enterprise.adbapi import ConnectionPool
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from zope.interface import Attribute, Interface, implementer

from .auth import ITokenStore
from .auth.pg_tokens import PgTokenStore
from .config import ConfigError, Settings
from .lifecycle import JobRecord
from .logs import logger
from .middleware import Middleware
from .store import READERS, JobHistory, SQLiteJobStore, close_database, open_database
from .store._interfaces import IJobIds
from .store.errors import Unavailable
from .store.history import node_stopped
from .store.database import Pool
from .store.ids import PgJobIds, StoredJobIds
from .store.pg import PgDatabase
from .store.pg_jobs import PgJobStore, abort_node_jobs
from .store.pg_listen import PgListener
from .transfers import DownloadRelay
from .cluster.bus import ClusterBus
from .cluster.locks import PgLocks
from .cluster.node import Node, NodeState
from .cluster.secret import shared_secret
from .locks import ILockManager

__all__ = ["ClusterBackends", "EmbeddedBackends", "IBackends", "migrate_database", "open_backends"]

log = logger(__name__)


class IBackends(Interface):
    """
    What the daemon keeps its state in, opened.
    """

    database = Attribute("The catalogue's database (users, API keys): a L{Pool}.")
    local_database = Attribute(
        "This daemon's own SQLite database in its state directory (the webhook outbox): a L{ConnectionPool}."
    )
    history = Attribute("The job history (L{JobHistory}), or C{None} when none is kept.")
    job_ids = Attribute("Where new jobs get their ids (L{IJobIds}), or C{None}: counted in memory.")
    tokens = Attribute("The short-lived tokens (L{ITokenStore}), or C{None}: in memory.")
    locks = Attribute("Who holds the job locks (L{ILockManager}), or C{None}: in memory (L{LocalLocks}).")
    store_check = Attribute(
        "A function starting a check that the job store takes writes (for C{/_health}), or C{None}."
    )

    def listening(bound: dict[str, int]) -> Any:
        """
        The daemon listens: C{bound} is the port each TCP or TLS listener
        got, by its endpoint string.  A Deferred.
        """

    def attach(middleware: Middleware) -> Any:
        """
        Start what needs the daemon's middleware (a node's events and
        commands across the cluster).  A Deferred.
        """

    def stop() -> Any:
        """
        Write what is pending and close everything, after the middleware
        stopped.  A Deferred.
        """


@implementer(IBackends)
class EmbeddedBackends:
    """
    One daemon alone: SQLite in the state directory.
    """

    def __init__(self, database: ConnectionPool, store: SQLiteJobStore | None, history: JobHistory | None) -> None:
        self.database: Pool = database
        self.local_database = database
        self.history = history
        self.job_ids: IJobIds | None = StoredJobIds(store) if store is not None else None
        self.tokens: ITokenStore | None = None
        self.locks: ILockManager | None = None
        self.store_check: Callable[[], Deferred[Any]] | None = store.check_writable if store is not None else None
        self._pool = database

    @classmethod
    async def open(cls, settings: Settings, reactor: Any) -> EmbeddedBackends:
        path = str(settings.state_path / "midjobs.db")
        database = open_database(path)
        if not settings.job_history:
            return cls(database, None, None)
        store = SQLiteJobStore(database, reactor, reader=open_database(path, connections=READERS))
        history = await JobHistory.open(
            store, reactor, settings.state_path / "jobs", keep_days=settings.keep_days, keep_records=settings.keep_records
        )
        return cls(database, store, history)

    def listening(self, bound: dict[str, int]) -> Deferred[None]:
        return succeed(None)

    def attach(self, middleware: Middleware) -> Deferred[None]:
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.history is not None:
            await self.history.stop()
        await close_database(self._pool)


class _Reaped:
    """
    Where the node's reaper tells the final records it wrote: held until
    the bus can tell them (the join reaps the node's previous run before
    the bus exists), then passed on.
    """

    def __init__(self) -> None:
        self._held: list[JobRecord] = []
        self._told: Callable[[list[JobRecord]], object] | None = None

    def __call__(self, records: list[JobRecord]) -> None:
        if self._told is None:
            self._held.extend(records)
        else:
            self._told(records)

    def tell(self, told: Callable[[list[JobRecord]], object]) -> None:
        """
        Pass the records on to C{told} from now on, those held first.
        """
        held, self._held = self._held, []
        self._told = told
        if held:
            told(held)


@implementer(IBackends)
class ClusterBackends:
    """
    A node of a cluster: the shared PostgreSQL database, and this node's
    name in it (L{Node}), its notifications (L{PgListener}) and, once
    attached, its events and commands across the nodes (L{ClusterBus}).
    """

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        db: PgDatabase,
        listener: PgListener,
        node: Node,
        store: PgJobStore,
        history: JobHistory,
        local_database: ConnectionPool,
        reaped: _Reaped,
    ) -> None:
        self._settings = settings
        self._reactor = reactor
        self.database: Pool = db
        self._db = db
        self.listener = listener
        self.node = node
        self.history = history
        self.local_database = local_database
        self.job_ids: IJobIds = PgJobIds(db, reactor, block=settings.id_block)
        self.locks = PgLocks(db, reactor, node=node.name, listener=listener)
        self.tokens = PgTokenStore(db, reactor)
        self._store = store
        self.bus: ClusterBus | None = None
        self._reaped = reaped

    def store_check(self) -> Deferred[None]:
        """
        Whether this node takes jobs: it holds its place in the cluster
        (not fenced, L{NodeState.DEGRADED}) and the database takes writes.
        """
        if self.node.state is not NodeState.ONLINE:
            return fail(Unavailable(f"the node {self.node.name} is {self.node.state.name}, cut from the job database"))
        return self._store.check_writable()

    @classmethod
    async def open(cls, settings: Settings, reactor: Any) -> ClusterBackends:
        url = settings.database_url
        assert url is not None  # open_backends chose this class for it
        name = settings.node
        advertise = settings.advertise_url()
        if advertise is None:
            raise ConfigError("[cluster] advertise: no TCP or TLS listener to make it of; set it")
        db = PgDatabase(url, reactor, size=settings.database_pool_size, application_name=f"midjobs {name}")
        listener = PgListener(url, reactor, application_name=f"midjobs {name} listener")
        await db.open()
        try:
            await db.migrate()
            await listener.start()
            node = Node(
                db, listener, reactor, name=name, advertise=advertise, node_timeout=settings.node_timeout,
                store_abort=abort_node_jobs,
            )
            # What the join records of the node's previous run is told once
            # the bus is up (L{attach}).
            reaped = _Reaped()
            node.on_reaped(reaped)
            # The name first: another live node of that name must keep its jobs.
            await node.join()
            store = PgJobStore(db, reactor, node=name)
            history = await JobHistory.open(
                store, reactor, settings.state_path / "jobs",
                keep_days=settings.keep_days, keep_records=settings.keep_records, node=name,
            )
        except BaseException:
            # Their threads would keep the process from exiting.
            await listener.stop()
            await db.close()
            raise
        local_database = open_database(str(settings.state_path / "midjobs.db"))
        log.info("node {node} of the cluster on {database}", node=name, database=settings.database_display)
        return cls(settings, reactor, db, listener, node, store, history, local_database, reaped)

    def listening(self, bound: dict[str, int]) -> Deferred[None]:
        """
        Advertise the port a listener got, if it was asked for port 0.
        """
        advertise = self._settings.advertise_url(bound)
        if advertise is None or advertise == self.node.advertise:
            return succeed(None)
        return self.node.readvertise(advertise)

    def attach(self, middleware: Middleware) -> Deferred[None]:
        return Deferred.fromCoroutine(self._attach(middleware))

    async def _attach(self, middleware: Middleware) -> None:
        bus = self.bus = ClusterBus(
            self._reactor, self.node.name, db=self._db, listener=self.listener, jobs=middleware.jobs,
            store=self._store, events=middleware.events, nodes=self.node.nodes,
            accepting=lambda: self.node.state is NodeState.ONLINE,
            catalogue=middleware.catalogue_changed_elsewhere,
            catalogue_missed=middleware.catalogue_missed,
        )
        middleware.cluster = bus
        self.node.on_fenced(lambda: middleware.jobs.abort_all(node_stopped(self.node.name)))
        middleware.download_relay = DownloadRelay(
            self._reactor, self.node.name, await shared_secret(self._db), self._locate
        )
        self.tokens.startService()
        await bus.start()
        await self.locks.attach(middleware.jobs)
        self._reaped.tell(bus.reaped)

    async def _locate_job(self, job_id: int) -> str | None:
        record = await self._store.get(job_id)
        if record is None or record.get("node") in (None, self.node.name):
            return None
        advertise: str | None = await self.node.advertise_of(record["node"])
        return advertise

    def _locate(self, job_id: int) -> Deferred[str | None]:
        """
        The URL of the node that runs job C{job_id}, or C{None} if it is
        this one or none (L{DownloadRelay}'s C{locate}).
        """
        return Deferred.fromCoroutine(self._locate_job(job_id))

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.bus is not None:
            await self.bus.stop()
        await maybeDeferred(self.tokens.stopService)
        await self.locks.stop()
        await self.history.stop()
        await self.node.leave()
        await self.listener.stop()
        await self._db.close()
        await close_database(self.local_database)


async def open_backends(settings: Settings, reactor: Any) -> IBackends:
    """
    Open what C{settings} name: a PostgreSQL cluster's database if
    C{[database] url} is set, else the state directory's SQLite file.
    """
    if settings.database_url is not None:
        return await ClusterBackends.open(settings, reactor)
    return await EmbeddedBackends.open(settings, reactor)


async def migrate_database(settings: Settings, reactor: Any) -> dict[str, int]:
    """
    Create or migrate the cluster's database C{settings} name, then close
    it (C{--migrate-only}, before a rollout).  The version of each part.

    @raise ConfigError: no C{[database] url}: the embedded database is
        migrated by each start.
    """
    url = settings.database_url
    if url is None:
        raise ConfigError("--migrate-only needs --database (the embedded SQLite database is migrated as the daemon starts)")
    db = PgDatabase(url, reactor, size=1, application_name=f"midjobs {settings.node} migration")
    await db.open()
    try:
        await db.migrate()
        return {part: version for part, (version, _) in (await db.versions()).items()}
    finally:
        await db.close()
