"""
One job list and one event stream over the nodes of a cluster that share a
PostgreSQL database.

L{ClusterBus} is this node's side of it:

  - it tells the other nodes of this node's jobs (L{JobPublisher});
  - it hears of theirs on L{JOBS_CHANNEL} and tells this node's
    C{core.get_jobs} subscribers through L{JobEvents}, the same visibility
    rules and formatting as a local job's events;
  - it waits for a job of another node (L{wait}): woken by the job's end,
    or, after the listener lost the database for a while, by reading its
    record again;
  - it aborts a job of another node (L{abort}): a row in C{node_commands}
    and a wake-up on that node's channel (L{node_channel}), in one
    transaction; each node takes the commands addressed to it when woken,
    when it starts, and when its listener is back;
  - it copies this node's job logs to the database and tells who follows
    the log of another node's job that it grew (L{midjobs.cluster.logs}).
"""

from __future__ import annotations

import collections
import errno
import json
import time
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import CallError
from ..events import EventHub
from ..interfaces import ICluster
from ..job import Job, JobsQueue
from ..job_events import JobEvents
from ..lifecycle import JobRecord, JobState
from ..logs import logger
from ..query import validate_options
from ..store import IJobStore
from ..store.database import Cursor, Pool
from ..store.pg_listen import PgListener
from .logs import CHUNKS_AT_ONCE, IJobLogChunks, LogShipper, read_chunks
from .payloads import CATALOGUE_CHANNEL, JOBS_CHANNEL, ItemKind, JobItem, LogItem, node_channel, sender, unpack
from .publisher import JobPublisher

__all__ = ["ABORT", "ClusterBus"]

log = logger(__name__)

#: The command that aborts a job on its node: its C{args} are C{{"reason": <error>}}.
ABORT = "abort"

#: How many ended jobs the receiver remembers, to drop what comes late about them.
_ENDED_MEMORY = 10_000


def _finished(record: JobRecord) -> bool:
    return JobState(record["state"]).finished


@attrs.define(eq=False)
class _Waiter:
    """
    One who waits for a job of another node: C{done} fires with its final
    record; C{progress} is told of each progress it reports meanwhile.
    """

    done: Deferred[JobRecord]
    progress: Callable[[dict[str, Any]], None] | None


@attrs.define(eq=False)
class _Arrival:
    """
    The items of one payload, told once the records that did not fit are read.
    """

    items: list[JobItem]
    fetched: dict[int, JobRecord | None] = attrs.Factory(dict)
    ready: bool = False


def _send_command(txn: Cursor, node: str, job_id: int, command: str, args: dict[str, Any]) -> None:
    txn.execute(
        "INSERT INTO node_commands (node, job_id, command, args, created) VALUES (?, ?, ?, CAST(? AS jsonb), ?)",
        (node, job_id, command, json.dumps(args), time.time()),
    )
    txn.execute("SELECT pg_notify(?, ?)", (node_channel(node), str(job_id)))


@implementer(ICluster, IJobLogChunks)
class ClusterBus:
    """
    This node's part in the cluster's one job list and one event stream (see the module).

    @ivar node: this node's name.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        node: str,
        *,
        db: Pool,
        listener: PgListener,
        jobs: JobsQueue,
        store: IJobStore,
        events: EventHub,
        nodes: Callable[[], Deferred[Any]],
        accepting: Callable[[], bool],
        catalogue: Callable[[str, int], object],
        catalogue_missed: Callable[[], object],
    ) -> None:
        """
        @param db: the cluster's database (L{midjobs.store.pg.PgDatabase}).
        @param listener: this node's LISTEN connection, started.
        @param jobs: this node's jobs.
        @param store: the cluster's job store, where another node's job is read.
        @param events: this node's event hub.
        @param nodes: what L{nodes} answers (L{midjobs.cluster.node.Node.nodes}).
        @param accepting: whether this node holds its place in the cluster
            and may take new jobs (its L{midjobs.cluster.node.Node} is online).
        @param catalogue: called with the kind and id of a user or API key
            another node changed, or of a web session it ended
            (L{ICluster.catalogue_changed}).
        @param catalogue_missed: called when what C{catalogue} would have
            been told may have gone unheard (the listener was away).
        """
        self.node = node
        self._db = db
        self._listener = listener
        self._jobs = jobs
        self._store = store
        self._events = JobEvents(events)
        self._nodes = nodes
        self._accepting = accepting
        self._catalogue = catalogue
        self._catalogue_missed = catalogue_missed
        self.publisher = JobPublisher(reactor, node, db)
        #: Copies this node's job logs to the database.
        self.logs = LogShipper(reactor, db, self.publisher)
        #: Who follows the log of a job of another node.
        self._log_followers: dict[int, list[Callable[[int, bool], None]]] = {}
        #: The newest revision told of each job of another node that has not ended.
        self._revs: dict[int, int] = {}
        #: The jobs of other nodes whose end was told (the newest L{_ENDED_MEMORY}).
        self._ended: collections.OrderedDict[int, None] = collections.OrderedDict()
        #: The payloads received, told in order as their records are at hand.
        self._inbox: collections.deque[_Arrival] = collections.deque()
        self._waiters: dict[int, list[_Waiter]] = {}
        #: Taking this node's commands: whether they must be read again after.
        self._taking: Deferred[None] | None = None
        self._take_again = False

    # Start and stop.

    def catalogue_changed(self, kind: str, identity: int) -> None:
        payload = json.dumps({"n": self.node, "k": kind, "i": identity})
        self._db.runOperation("SELECT pg_notify(?, ?)", (CATALOGUE_CHANNEL, payload)).addErrback(
            lambda failure: log.failure("Telling the other nodes that {kind} {identity} changed", failure,
                                        kind=kind, identity=identity)
        )

    def _catalogue_changed(self, payload: str) -> None:
        try:
            told = json.loads(payload)
            node, kind, identity = told["n"], str(told["k"]), int(told["i"])
        except (ValueError, KeyError, TypeError):
            log.warn("A catalogue notification that is not one: {payload!r}", payload=payload[:200])
            return
        if node != self.node:
            self._catalogue(kind, identity)

    def check_accepting(self) -> None:
        if not self._accepting():
            raise CallError(
                f"The node {self.node} is cut from the job database: it takes no new jobs until it is back",
                errno.ENOTCONN,
            )

    async def start(self) -> None:
        """
        Tell the cluster of this node's jobs, hear of the others', and take
        the commands addressed to this node (those left while it was away too).
        """
        self._jobs.observe(self.publisher)
        self._jobs.observe(self.logs)
        self._listener.on_reconnect(self._resync)
        await self._listener.listen(JOBS_CHANNEL, self._received)
        await self._listener.listen(node_channel(self.node), self._woken)
        await self._listener.listen(CATALOGUE_CHANNEL, self._catalogue_changed)
        await self._take_commands()

    async def stop(self) -> None:
        """
        Send what is pending and stop hearing of the cluster.  Who waits for
        a job of another node fails with C{ESHUTDOWN}.
        """
        self._jobs.unobserve(self.publisher)
        self._jobs.unobserve(self.logs)
        await self.logs.stop()
        await self.publisher.flush()
        await self._listener.unlisten(JOBS_CHANNEL)
        await self._listener.unlisten(node_channel(self.node))
        await self._listener.unlisten(CATALOGUE_CHANNEL)
        waiters, self._waiters = self._waiters, {}
        for each in waiters.values():
            for waiter in each:
                waiter.done.errback(CallError("The daemon stopped while waiting for this job", errno.ESHUTDOWN))

    # ICluster

    def nodes(self) -> Deferred[Any]:
        """
        The nodes of the cluster, as C{cluster.nodes} lists them (L{ICluster.nodes}).
        """
        return self._nodes()

    def _local(self, job_id: int) -> Job | None:
        try:
            return self._jobs.get(job_id)
        except CallError:
            return None

    def record(self, job_id: int) -> Deferred[JobRecord | None]:
        """
        The record of job C{job_id}, of any node: this node's from memory,
        another's from the store; C{None} if there is no such job.
        """
        job = self._local(job_id)
        if job is not None:
            return succeed(job.to_record())
        found: Deferred[JobRecord | None] = self._store.get(job_id)
        return found

    def abort(self, record: JobRecord, reason: str) -> Deferred[None]:
        """
        Abort the job of C{record} with C{reason} as its error, on the node
        that runs it.  The caller checked that it may.  Fires once the
        command is durable (the job's end comes as an event).
        """
        node = record.get("node")
        if node == self.node or node is None:
            self._abort_here(record["id"], reason)
            return succeed(None)
        done: Deferred[None] = self._db.runInteraction(_send_command, node, record["id"], ABORT, {"reason": reason})
        return done

    def wait(self, job_id: int, progress: Callable[[dict[str, Any]], None] | None = None) -> Deferred[JobRecord]:
        """
        Fire with the final record of job C{job_id} once it has ended, on
        whichever node; C{progress} is called with each progress it reports
        meanwhile.  Fails with C{CallError(ENOENT)} if there is no such job.
        """
        job = self._local(job_id)
        if job is not None:
            return job.wait().addCallback(lambda _: job.to_record())

        def cancel(d: Deferred[JobRecord]) -> None:
            self._drop_waiter(job_id, waiter)

        waiter = _Waiter(Deferred(cancel), progress)
        # Registered before the store is read: an end told meanwhile is not missed.
        self._waiters.setdefault(job_id, []).append(waiter)
        self._check(job_id, missing_is_error=True)
        return waiter.done

    def reaped(self, records: list[JobRecord]) -> None:
        """
        The node's reaper (L{midjobs.cluster.node.Node}'s C{on_reaped}) wrote
        these final C{records} for the jobs of a node that is gone: tell the
        subscribers and waiters here, and the other nodes.
        """
        for record in records:
            self._note_end(record["id"])
            self._tell(JobItem(ItemKind.ENDED, record["id"], 0, record), record)
        self.publisher.reaped(records)

    # IJobLogChunks

    def log_chunks(self, job_id: int, after: int, limit: int = CHUNKS_AT_ONCE) -> Deferred[list[tuple[int, bytes]]]:
        """
        The chunks of job C{job_id}'s log in the database numbered above
        C{after}, in order, at most C{limit}: C{(number, bytes)}.
        """
        chunks: Deferred[list[tuple[int, bytes]]] = self._db.runInteraction(read_chunks, job_id, after, limit)
        return chunks

    def follow_log(self, job_id: int, grew: Callable[[int, bool], None]) -> Callable[[], None]:
        """
        Call C{grew(size, final)} each time another node tells that more of
        job C{job_id}'s log is in the database (C{final}: all of it); return
        what stops it.
        """
        self._log_followers.setdefault(job_id, []).append(grew)

        def stop() -> None:
            followers = self._log_followers.get(job_id, [])
            if grew in followers:
                followers.remove(grew)
                if not followers:
                    del self._log_followers[job_id]

        return stop

    # Waiting.

    def _drop_waiter(self, job_id: int, waiter: _Waiter) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[job_id]

    def _check(self, job_id: int, missing_is_error: bool = False) -> None:
        """
        Read the record of C{job_id}, and wake its waiters if it has ended.
        """

        def checked(record: JobRecord | None) -> None:
            if record is None:
                if missing_is_error:
                    self._fail_waiters(job_id, CallError(f"Job {job_id} does not exist", errno.ENOENT))
                return
            if _finished(record):
                self._wake(job_id, record)

        def failed(failure: Failure) -> None:
            log.warn("Could not read job {job_id}: {error}", job_id=job_id, error=failure.getErrorMessage())

        self._store.get(job_id).addCallbacks(checked, failed)

    def _wake(self, job_id: int, record: JobRecord) -> None:
        for waiter in self._waiters.pop(job_id, []):
            waiter.done.callback(record)

    def _fail_waiters(self, job_id: int, error: Exception) -> None:
        for waiter in self._waiters.pop(job_id, []):
            waiter.done.errback(error)

    def _resync(self) -> None:
        """
        The listener is back: what was notified while it was away is lost.
        Read the records of the jobs waited for, tell the subscribers what
        became of the other nodes' jobs meanwhile (L{_catch_up}), take the
        commands addressed here, and have the logins held here checked
        against the catalogue.
        """
        for job_id in list(self._waiters):
            self._check(job_id)
        self._catch_up().addErrback(
            lambda failure: log.warn("Could not read the jobs of the other nodes: {error}", error=failure.getErrorMessage())
        )
        self._take_commands()
        self._catalogue_missed()

    def _hearing(self) -> bool:
        """
        Whether anyone here follows the other nodes' jobs: a subscriber of
        C{core.get_jobs}, a waiter or a log follower.  Nobody: their
        notifications are passed over unread (a subscriber who comes later
        reads the list, then hears what changes from then on).
        """
        return bool(self._waiters or self._log_followers) or self._events.listening()

    def _catch_up(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._read_missed())

    async def _read_missed(self) -> None:
        """
        The unfinished jobs of the other nodes, and the end of those told
        unfinished before, as the store has them: each told as the
        notifications would have told it.
        """
        known = list(self._revs)
        unfinished: list[JobRecord] = await self._store.query(
            [["state", "in", [JobState.WAITING.value, JobState.RUNNING.value]], ["node", "!=", self.node]],
            validate_options(None),
            (),
        )
        seen = {int(record["id"]) for record in unfinished}
        gone = [job_id for job_id in known if job_id not in seen]
        ended = await gatherResults([self._store.get(job_id) for job_id in gone], consumeErrors=True)
        for record in unfinished:
            job_id = int(record["id"])
            kind = ItemKind.CHANGED if job_id in self._revs else ItemKind.ADDED
            self._revs.setdefault(job_id, 0)
            self._events.tell(kind.event, job_id, record)
        for job_id, record in zip(gone, ended):
            if record is not None and _finished(record) and job_id not in self._ended:
                self._note_end(job_id)
                self._events.tell(ItemKind.ENDED.event, job_id, record)
                self._wake(job_id, record)

    # Hearing.

    def _received(self, text: str) -> None:
        if sender(text) == self.node or not self._hearing():
            return
        try:
            payload = unpack(text)
        except (ValueError, KeyError) as e:
            log.warn("Dropped a jobs notification that is not one: {error}", error=str(e))
            return
        if payload.node == self.node:
            return
        items: list[JobItem] = []
        for item in payload.items:
            if isinstance(item, LogItem):
                for grew in list(self._log_followers.get(item.job_id, ())):
                    grew(item.size, item.final)
                continue
            if item.job_id in self._ended:
                continue
            if item.kind is ItemKind.ENDED:
                self._note_end(item.job_id)
            else:
                last = self._revs.get(item.job_id)
                if last is not None and item.rev <= last:
                    continue
                self._revs[item.job_id] = item.rev
            items.append(item)
        if not items:
            return
        arrival = _Arrival(items)
        self._inbox.append(arrival)
        missing = [
            item.job_id
            for item in items
            if item.record is None and (self._events.listening() or item.job_id in self._waiters)
        ]
        if not missing:
            arrival.ready = True
            self._deliver()
            return

        def fetched(records: list[JobRecord | None]) -> None:
            arrival.fetched.update(zip(missing, records))
            arrival.ready = True
            self._deliver()

        def failed(failure: Failure) -> None:
            log.warn("Could not read jobs {job_ids}: {error}", job_ids=missing, error=failure.getErrorMessage())
            arrival.ready = True
            self._deliver()

        gatherResults([self._store.get(job_id) for job_id in missing], consumeErrors=True).addCallbacks(
            fetched, failed
        )

    def _note_end(self, job_id: int) -> None:
        """
        The end of job C{job_id} is told: what comes about it later is dropped.
        """
        self._revs.pop(job_id, None)
        self._ended[job_id] = None
        if len(self._ended) > _ENDED_MEMORY:
            self._ended.popitem(last=False)

    def _deliver(self) -> None:
        # In the order the payloads came.
        while self._inbox and self._inbox[0].ready:
            arrival = self._inbox.popleft()
            for item in arrival.items:
                record = item.record if item.record is not None else arrival.fetched.get(item.job_id)
                if record is not None:
                    self._tell(item, record)

    def _tell(self, item: JobItem, record: JobRecord) -> None:
        self._events.tell(item.kind.event, item.job_id, record)
        if item.kind is ItemKind.ENDED:
            self._wake(item.job_id, record)
            return
        for waiter in self._waiters.get(item.job_id, ()):
            if waiter.progress is not None and record.get("progress") is not None:
                waiter.progress(record["progress"])

    # Commands addressed to this node.

    def _woken(self, payload: str) -> None:
        self._take_commands()

    def _take_commands(self) -> Deferred[None]:
        """
        Take (and delete) the commands addressed to this node, and carry them
        out; one reading at a time, another after it if woken meanwhile.
        """
        if self._taking is not None:
            self._take_again = True
            return self._taking
        self._take_again = False
        taking: Deferred[list[Any]] = self._db.runQuery(
            "DELETE FROM node_commands WHERE node = ? RETURNING id, job_id, command, CAST(args AS text)", (self.node,)
        )
        self._taking = taking.addCallbacks(self._carry_out, self._not_taken)
        self._taking.addBoth(self._taken)
        return self._taking

    def _taken(self, _: object) -> None:
        self._taking = None
        if self._take_again:
            self._take_commands()

    def _not_taken(self, failure: Failure) -> None:
        # Read again when the listener is back (L{_resync}).
        log.warn("Could not read the commands for node {node}: {error}", node=self.node, error=failure.getErrorMessage())

    def _carry_out(self, rows: list[Any]) -> None:
        for _, job_id, command, args in sorted(rows):
            if command != ABORT:
                log.warn("Unknown command {command} for job {job_id}", command=command, job_id=job_id)
                continue
            reason = json.loads(args).get("reason") or "Job aborted"
            self._abort_here(job_id, reason)

    def _abort_here(self, job_id: int, reason: str) -> None:
        job = self._local(job_id)
        if job is None or job.state.finished or job.ending:
            return
        log.info("Job {job_id} ({method}) aborted from another node: {reason}", job_id=job_id, method=job.method, reason=reason)
        job.abort(reason)
