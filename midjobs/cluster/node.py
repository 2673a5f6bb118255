"""
One daemon as a node of the cluster: L{Node}.

A node joins under a name no other live node has: the name is a session
advisory lock taken on the listener's own session (L{PgListener.run}), so
it is held exactly as long as that session lives, and a process killed
outright loses it with its socket.  Joining then writes the node's row of
the table C{nodes} with a new I{epoch}, and records the unfinished jobs of
its previous incarnation as aborted.

Every C{node_timeout / 5} the node writes its heartbeat with the database's
clock, and in the same tick reaps the nodes whose heartbeat is too old:

    UPDATE nodes SET state = 'OFFLINE' WHERE state = 'ONLINE' AND heartbeat < <now> - <threshold>

Under READ COMMITTED (PostgreSQL's default) a second survivor running the
same statement waits for the first one's row lock, then sees the row
C{OFFLINE} and leaves it: exactly one survivor reaps each dead node.  In
that transaction its unfinished jobs are recorded as aborted ("The node n1
stopped while this job was running", by the store's C{store_abort}), its
rows of C{job_locks} are deleted and each freed lock is notified on the
channel C{midjobs_locks}; after the commit the new records go to the
L{Node.on_reaped} callbacks.

The timing, with I{T} = C{node_timeout} and I{I} = I{T}/5 the heartbeat
interval:

  - a node is reaped once its heartbeat is older than I{T} - I{I}
    (= 0.8 I{T}): a node killed just after a heartbeat is reaped at the
    first survivor tick after that, at most I{I} later, so its jobs are
    aborted within I{T} of the kill (plus the reaping transaction);
  - a node that has committed no heartbeat for 0.8 I{T}, counted from when
    it sent its last committed one (which is no later than the time the
    database gave it), fences itself: L{NodeState.DEGRADED} and the
    L{Node.on_fenced} callbacks (abort local jobs, refuse new ones).  It
    does so no later than the others may reap it, as long as the clocks
    tick at the same rate (keep NTP on);
  - when its heartbeat commits again it is L{NodeState.ONLINE} again
    (L{Node.on_rejoined}); if its heartbeat matches no row, it was reaped
    meanwhile: it joins again (new epoch) first.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
from collections.abc import Callable
from enum import Enum, auto
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from .. import wire_json
from ..config import ConfigError
from ..lifecycle import JobRecord
from ..logs import logger
from ..store.database import Cursor, Pool, Row
from ..store.history import node_stopped
from ..store.pg_listen import NotListening, PgListener

if TYPE_CHECKING:
    import psycopg

__all__ = ["LOCKS_CHANNEL", "Node", "NodeNameTaken", "NodeState", "StoreAbort"]

log = logger(__name__)

#: Heartbeats per C{node_timeout}.
HEARTBEATS_PER_TIMEOUT = 5
#: The share of C{node_timeout} without a committed heartbeat after which a
#: node fences itself, and the age of a heartbeat after which the others reap.
FENCE_AFTER = 0.8
#: The channel that tells that a job lock was freed (its payload: the lock).
LOCKS_CHANNEL = "midjobs_locks"

#: The database's clock, in seconds since the epoch (as the store's times).
_NOW = "extract(epoch from clock_timestamp())::double precision"

#: Records the unfinished jobs of a node as aborted, in the caller's
#: transaction: C{store_abort(txn, error, now, node)} returns the new
#: records (the store's C{abort_node_jobs}).
StoreAbort = Callable[[Cursor, str, float, str], list[JobRecord]]


class NodeState(Enum):
    """
    Where a L{Node} is.
    """

    #: Not joined yet, or left.
    OFFLINE = auto()
    #: Taking its name and writing its row (L{Node.join}).
    JOINING = auto()
    #: Joined, its heartbeat committed in time: it takes jobs.
    ONLINE = auto()
    #: Fenced: no heartbeat committed for 0.8 C{node_timeout}, or counted as
    #: gone by the others; it takes no jobs until its heartbeat works again.
    DEGRADED = auto()


class NodeNameTaken(ConfigError):
    """
    Another live node has this node's name.
    """

    def __init__(self, name: str, host: str | None = None, pid: int | None = None, age: float | None = None) -> None:
        if host is None:
            where = "starting"
        else:
            where = f"host {host}, pid {pid}, last heartbeat {round(age or 0)} s ago"
        super().__init__(f"node {name} is already online ({where})")
        self.name = name


def _version() -> str:
    try:
        return importlib.metadata.version("midjobs")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# What runs in a thread: on the listener's session, or in a transaction.


#: The advisory lock key of a node's name, from its name (C{%s}).
_NAME_KEY = "hashtextextended('midjobs node ' || %s, 0)"


def _take_name(conn: psycopg.Connection[Any], name: str) -> bool:
    """
    Whether this session holds the name, taking it if it is free: a
    session that already holds it does not take it twice (a session
    advisory lock taken twice must be given back twice).
    """
    held = conn.execute(
        f"WITH k AS (SELECT {_NAME_KEY} AS key) "
        "SELECT count(*) FROM pg_locks, k WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted "
        "AND objsubid = 1 AND classid = ((key >> 32) & 4294967295)::oid AND objid = (key & 4294967295)::oid",
        (name,),
    ).fetchone()
    if held is not None and held[0]:
        return True
    taken = conn.execute(f"SELECT pg_try_advisory_lock({_NAME_KEY})", (name,)).fetchone()
    return taken is not None and bool(taken[0])


def _release_name(conn: psycopg.Connection[Any], name: str) -> bool:
    released = conn.execute(f"SELECT pg_advisory_unlock({_NAME_KEY})", (name,)).fetchone()
    return released is not None and bool(released[0])


def _holder(txn: Cursor, name: str) -> Row | None:
    txn.execute(f"SELECT host, pid, {_NOW} - heartbeat FROM nodes WHERE name = ?", (name,))
    return txn.fetchone()


def _free_locks(txn: Cursor, node: str) -> list[str]:
    """
    Delete the job locks C{node} holds and its jobs' places in their
    queues, and notify each lock: in the caller's transaction, so the
    others hear of them at its commit.
    """
    txn.execute("DELETE FROM job_locks WHERE node = ? RETURNING name", (node,))
    locks = {str(row[0]) for row in txn.fetchall()}
    txn.execute("DELETE FROM job_lock_queue WHERE node = ? RETURNING name", (node,))
    locks.update(str(row[0]) for row in txn.fetchall())
    for lock in sorted(locks):
        txn.execute(f"SELECT pg_notify('{LOCKS_CHANNEL}', ?)", (lock,))
    return sorted(locks)


def _register(
    txn: Cursor, name: str, advertise: str, store_abort: StoreAbort
) -> tuple[int, list[JobRecord], list[str]]:
    """
    Write the node's row for a new incarnation and abort what the previous
    one left unfinished.
    """
    txn.execute(
        "INSERT INTO nodes (name, advertise, state, epoch, heartbeat, started, host, pid, version) "
        f"VALUES (?, ?, 'ONLINE', 1, {_NOW}, {_NOW}, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET advertise = excluded.advertise, state = 'ONLINE', "
        "epoch = nodes.epoch + 1, heartbeat = excluded.heartbeat, started = excluded.started, "
        "host = excluded.host, pid = excluded.pid, version = excluded.version "
        "RETURNING epoch, heartbeat",
        (name, advertise, socket.gethostname(), os.getpid(), _version()),
    )
    row = txn.fetchone()
    assert row is not None
    epoch, now = int(row[0]), float(row[1])
    records = store_abort(txn, node_stopped(name), now, name)
    return epoch, records, _free_locks(txn, name)


def _heartbeat(txn: Cursor, name: str, epoch: int) -> bool:
    """
    Whether the heartbeat found the node's row still its own and online.
    """
    txn.execute(
        f"UPDATE nodes SET heartbeat = {_NOW} WHERE name = ? AND epoch = ? AND state = 'ONLINE' RETURNING epoch",
        (name, epoch),
    )
    return txn.fetchone() is not None


def _reap(
    txn: Cursor, me: str, older_than: float, store_abort: StoreAbort
) -> list[tuple[str, list[JobRecord], list[str]]]:
    """
    Take the nodes whose heartbeat is older than C{older_than} seconds
    offline, abort their unfinished jobs and free their locks: for each, its
    name, its aborted records and its freed locks.
    """
    txn.execute(
        "UPDATE nodes SET state = 'OFFLINE' "
        f"WHERE state = 'ONLINE' AND name <> ? AND heartbeat < {_NOW} - ? RETURNING name, {_NOW}",
        (me, older_than),
    )
    dead = [(str(name), float(now)) for name, now in txn.fetchall()]
    return [(name, store_abort(txn, node_stopped(name), now, name), _free_locks(txn, name)) for name, now in dead]


def _nodes(txn: Cursor) -> list[Row]:
    txn.execute(
        "SELECT name, advertise, state, heartbeat, "
        "(SELECT count(*) FROM jobs WHERE jobs.node = nodes.name AND jobs.state = 'RUNNING') "
        "FROM nodes ORDER BY name"
    )
    return txn.fetchall()


class Node:
    """
    This daemon's membership of the cluster (see the module docstring).

    @ivar name: the node's name, unique among the live nodes.
    @ivar advertise: the URL at which the other nodes reach this one.
    @ivar node_timeout: seconds without a heartbeat after which a node
        counts as gone.
    @ivar state: a L{NodeState}.
    @ivar epoch: the incarnation of the node's row this process wrote, once
        joined.
    """

    def __init__(
        self,
        db: Pool,
        listener: PgListener,
        reactor: Any,
        *,
        name: str,
        advertise: str,
        node_timeout: float = 15.0,
        store_abort: StoreAbort,
    ) -> None:
        """
        @param db: the shared database (its transactions are READ COMMITTED).
        @param listener: the node's listener, started before L{join}: the
            name is held by its session.
        @param reactor: provides C{IReactorTime}.
        @param store_abort: records a node's unfinished jobs as aborted
            (L{StoreAbort}).
        """
        if node_timeout <= 0:
            raise ValueError(f"node_timeout must be positive, not {node_timeout}")
        self.name = name
        self.advertise = advertise
        self.node_timeout = node_timeout
        self.state = NodeState.OFFLINE
        self.epoch: int | None = None
        self._db = db
        self._listener = listener
        self._reactor = reactor
        self._store_abort = store_abort
        self._on_reaped: list[Callable[[list[JobRecord]], object]] = []
        self._on_fenced: list[Callable[[], object]] = []
        self._on_rejoined: list[Callable[[], object]] = []
        #: Whether the listener's current session holds the name.
        self._holds_name = False
        self._beats = LoopingCall(self._tick)
        self._beats.clock = reactor
        self._beating: Deferred[LoopingCall] | None = None
        self._fence_timer: IDelayedCall | None = None
        #: Whether the last heartbeat failed (to log an outage once).
        self._beat_failed = False
        #: Whether a name refused while joining again was logged.
        self._refusal_logged = False
        listener.on_lost(self._session_lost)
        listener.on_reconnect(self._session_back)

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.state.name}>"

    @property
    def heartbeat_interval(self) -> float:
        """
        Seconds between two heartbeats (and reaper rounds).
        """
        return self.node_timeout / HEARTBEATS_PER_TIMEOUT

    @property
    def holds_name(self) -> bool:
        """
        Whether the listener's current session holds the node's name.
        """
        return self._holds_name

    @property
    def _fence_after(self) -> float:
        return FENCE_AFTER * self.node_timeout

    # The public face.

    def join(self) -> Deferred[None]:
        """
        Take the node's name, write its row, abort what its previous
        incarnation left unfinished (the records go to L{on_reaped}), then
        heartbeat.

        @return: fires once joined; fails with L{NodeNameTaken} if a live
            node has the name.
        """
        if self.state is not NodeState.OFFLINE:
            raise RuntimeError(f"{self!r} has already joined")
        return Deferred.fromCoroutine(self._join())

    def leave(self) -> Deferred[None]:
        """
        Stop the heartbeat, mark the node C{OFFLINE} and give its name back
        (on a clean stop, once its jobs have ended).  A database that cannot
        be reached is logged, not raised: the others reap the node in time.
        """
        return Deferred.fromCoroutine(self._leave())

    def nodes(self) -> Deferred[list[dict[str, Any]]]:
        """
        Every node the cluster has known: C{name}, C{advertise}, C{state}
        (C{ONLINE} or C{OFFLINE}), C{heartbeat} (a date, as the job records'
        times) and C{running_jobs}, by name.
        """

        def dicts(rows: list[Row]) -> list[dict[str, Any]]:
            return [
                {
                    "name": name,
                    "advertise": advertise,
                    "state": state,
                    "heartbeat": wire_json.from_wire({"$date": int(heartbeat * 1000)}),
                    "running_jobs": int(running),
                }
                for name, advertise, state, heartbeat, running in rows
            ]

        return self._db.runInteraction(_nodes).addCallback(dicts)

    def readvertise(self, advertise: str) -> Deferred[None]:
        """
        This node is reached at C{advertise} from now on (its listener got
        its port only once it listened).
        """
        self.advertise = advertise
        return self._db.runOperation(
            "UPDATE nodes SET advertise = ? WHERE name = ? AND epoch = ?", (advertise, self.name, self.epoch)
        )

    def advertise_of(self, name: str) -> Deferred[str | None]:
        """
        The URL at which the online node C{name} is reached, or L{None} if
        no such node is online.
        """

        def first(rows: list[Row]) -> str | None:
            return str(rows[0][0]) if rows else None

        return self._db.runQuery("SELECT advertise FROM nodes WHERE name = ? AND state = 'ONLINE'", (name,)).addCallback(
            first
        )

    def on_reaped(self, callback: Callable[[list[JobRecord]], object]) -> None:
        """
        Call C{callback} with the records of jobs this node recorded as
        aborted (of a dead node, or of its own previous incarnation), after
        the commit.
        """
        self._on_reaped.append(callback)

    def on_fenced(self, callback: Callable[[], object]) -> None:
        """
        Call C{callback} when the node fences itself (L{NodeState.DEGRADED}):
        abort the local jobs, refuse new ones.
        """
        self._on_fenced.append(callback)

    def on_rejoined(self, callback: Callable[[], object]) -> None:
        """
        Call C{callback} when a fenced node is L{NodeState.ONLINE} again.
        """
        self._on_rejoined.append(callback)

    # Joining and leaving.

    async def _join(self) -> None:
        self.state = NodeState.JOINING
        sent = self._reactor.seconds()
        try:
            await self._take_name()
            await self._register()
        except BaseException:
            if self.state is NodeState.JOINING:
                self.state = NodeState.OFFLINE
            raise
        if self._left():
            return  # left meanwhile
        self.state = NodeState.ONLINE
        self._arm_fence(sent)
        self._beating = self._beats.start(self.heartbeat_interval, now=False)
        log.info("node {name} joined the cluster (epoch {epoch})", name=self.name, epoch=self.epoch)

    async def _take_name(self) -> None:
        """
        Make sure the listener's session holds the name (asked of the
        session itself: a session may be gone before the listener knows).
        """
        if not await self._listener.run(lambda conn: _take_name(conn, self.name)):
            self._holds_name = False
            holder = await self._db.runInteraction(_holder, self.name)
            if holder is None:
                raise NodeNameTaken(self.name)
            host, pid, age = holder
            raise NodeNameTaken(self.name, str(host), int(pid), float(age))
        self._holds_name = True

    async def _register(self) -> None:
        epoch, records, locks = await self._db.runInteraction(
            _register, self.name, self.advertise, self._store_abort
        )
        self.epoch = epoch
        if records or locks:
            log.info(
                "node {name}: {jobs} unfinished jobs of its previous run aborted, {locks} locks freed",
                name=self.name,
                jobs=len(records),
                locks=len(locks),
            )
        if records:
            self._tell(self._on_reaped, records)

    async def _leave(self) -> None:
        if self.state is NodeState.OFFLINE:
            return
        self.state = NodeState.OFFLINE
        self._disarm_fence()
        if self._beats.running:
            self._beats.stop()
        if self._beating is not None:
            await self._beating
            self._beating = None
        try:
            await self._db.runOperation(
                "UPDATE nodes SET state = 'OFFLINE' WHERE name = ? AND epoch = ?", (self.name, self.epoch)
            )
        except Exception as e:
            log.warn("node {name} could not record that it left: {error}", name=self.name, error=str(e).strip())
        if self._holds_name:
            self._holds_name = False
            try:
                await self._listener.run(lambda conn: _release_name(conn, self.name))
            except Exception as e:
                log.warn("node {name} could not give its name back: {error}", name=self.name, error=str(e).strip())
        log.info("node {name} left the cluster", name=self.name)

    def _session_lost(self, reason: Failure) -> None:
        # The name was a lock of that session: it went with it.
        self._holds_name = False

    def _session_back(self) -> Deferred[None] | None:
        if self._left():
            return None
        return Deferred.fromCoroutine(self._name_again())

    async def _name_again(self) -> None:
        try:
            await self._take_name()
        except NodeNameTaken as e:
            log.error("node {name}: the listener's session is back but {error}", name=self.name, error=str(e))

    def _left(self) -> bool:
        """
        Whether the node is not (or no longer) a member.
        """
        return self.state is NodeState.OFFLINE

    # The heartbeat and the reaper.

    def _tick(self) -> Deferred[None]:
        """
        One heartbeat and, if it committed, one reaper round; never fails
        (a failure would stop the loop).
        """

        def failed(failure: Failure) -> None:
            log.failure("node {name}: a heartbeat round went wrong", failure, name=self.name)

        return Deferred.fromCoroutine(self._beat()).addErrback(failed)

    async def _beat(self) -> None:
        if self._left() or self.epoch is None:
            return
        sent = self._reactor.seconds()
        try:
            alive = await self._db.runInteraction(_heartbeat, self.name, self.epoch)
        except Exception as e:
            if not self._beat_failed:
                self._beat_failed = True
                log.warn("node {name}: the heartbeat failed: {error}", name=self.name, error=str(e).strip())
            return
        if self._left():
            return
        if self._beat_failed:
            self._beat_failed = False
            log.info("node {name}: the heartbeat works again", name=self.name)
        if not alive and not await self._join_again():
            return
        if self._left():
            return
        self._beaten(sent)
        await self._reap_round()

    async def _join_again(self) -> bool:
        """
        The node's row is no longer its own (the others counted it as gone):
        fence, then join as a new incarnation; whether it could.
        """
        log.warn("node {name} was counted as gone by the cluster: joining again", name=self.name)
        self._fence()
        try:
            await self._take_name()
        except (NodeNameTaken, NotListening) as e:
            # Taken by another process, or the listener has no session (it
            # takes the name again when it has one): try at the next tick.
            if not self._refusal_logged:
                self._refusal_logged = True
                log.error("node {name} cannot join again: {error}", name=self.name, error=str(e))
            return False
        self._refusal_logged = False
        await self._register()
        return True

    def _beaten(self, sent: float) -> None:
        """
        A heartbeat sent at C{sent} committed (or a new incarnation was
        written): the fence moves on, and a fenced node is online again,
        unless it came too late to count.
        """
        if sent + self._fence_after <= self._reactor.seconds():
            return
        self._arm_fence(sent)
        if self.state is NodeState.DEGRADED:
            self.state = NodeState.ONLINE
            log.info("node {name} is online again (epoch {epoch})", name=self.name, epoch=self.epoch)
            self._tell(self._on_rejoined)

    async def _reap_round(self) -> None:
        older_than = self.node_timeout - self.heartbeat_interval
        reaped = await self._db.runInteraction(_reap, self.name, older_than, self._store_abort)
        for dead, records, locks in reaped:
            log.warn(
                "node {dead} is gone: {jobs} unfinished jobs aborted, {locks} locks freed (by {name})",
                dead=dead,
                jobs=len(records),
                locks=len(locks),
                name=self.name,
            )
            if records:
                self._tell(self._on_reaped, records)

    # Fencing.

    def _arm_fence(self, since: float) -> None:
        self._disarm_fence()
        delay = max(0.0, since + self._fence_after - self._reactor.seconds())
        self._fence_timer = self._reactor.callLater(delay, self._fence_lapsed)

    def _disarm_fence(self) -> None:
        if self._fence_timer is not None and self._fence_timer.active():
            self._fence_timer.cancel()
        self._fence_timer = None

    def _fence_lapsed(self) -> None:
        self._fence_timer = None
        log.warn(
            "node {name}: no heartbeat committed for {seconds} s: no new jobs until it is",
            name=self.name,
            seconds=round(self._fence_after, 1),
        )
        self._fence()

    def _fence(self) -> None:
        self._disarm_fence()
        if self.state is NodeState.ONLINE:
            self.state = NodeState.DEGRADED
            self._tell(self._on_fenced)

    def _tell(self, callbacks: list[Callable[..., object]], *args: object) -> None:
        for callback in list(callbacks):
            maybeDeferred(callback, *args).addErrback(
                lambda f: log.failure("node {name}: a callback failed", f, name=self.name)
            )
