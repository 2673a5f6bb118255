"""
L{midjobs.cluster.bus.ClusterBus} in one process: two nodes (two
L{Middleware}s, each with its queue and event hub) on one private
PostgreSQL database.  A job of node A is told to B's C{core.get_jobs}
subscribers in order, with the visibility rules, its progress coalesced and
a record too big for a notification read from the store; B aborts A's job
(with force too) and waits for it, and a waiter is woken by the resync after
B's listener was away.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, AsyncIterator

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater

from midjobs.auth import ApiKeyStore, UserStore, make_portal
from midjobs.auth.avatar import User
from midjobs.auth.roles import FULL_ADMIN
from midjobs.cluster.bus import ClusterBus
from midjobs.cluster.node import Node as ClusterNode, NodeState
from midjobs.cluster.logs import CHUNK_SIZE
from midjobs.cluster.payloads import JOBS_CHANNEL, MAX_PAYLOAD, ItemKind, JobItem, LogItem, node_channel, pack, unpack
from midjobs.errors import CallError
from midjobs.events import Notification
from midjobs.job import Job
from midjobs.lifecycle import JobAborted, JobRecord
from midjobs.middleware import Middleware
from midjobs.pipe import Pipes
from midjobs.plugins.core import CoreService
from midjobs.service import Service, job
from midjobs.store.pg import PgDatabase
from midjobs.store.ids import CountedJobIds
from midjobs.store.pg_jobs import PgJobStore, abort_node_jobs
from midjobs.store.pg_listen import PgListener

#: The fixtures postgres_server and postgres_database.
pytest_plugins = ["postgres_server"]

ADMIN = User("admin", [FULL_ADMIN], "LOGIN_PASSWORD", user_id=1)
ALICE = User("alice", [], "LOGIN_PASSWORD", user_id=2)
BOB = User("bob", [], "LOGIN_PASSWORD", user_id=3)

#: The cluster's nodes here never miss a heartbeat for this long.
NODE_TIMEOUT = 30.0


class CountingStore:
    """
    A job store whose reads of one record (C{get}) are counted.
    """

    def __init__(self, store: PgJobStore) -> None:
        self._store = store
        #: The jobs read, as they were asked for, and as the reads answered.
        self.reads: list[int] = []
        self.answered: list[int] = []

    def get(self, job_id: int) -> Deferred[JobRecord | None]:
        self.reads.append(job_id)

        def answered(record: JobRecord | None) -> JobRecord | None:
            self.answered.append(job_id)
            return record

        return self._store.get(job_id).addCallback(answered)

    def query(self, filters: Any, options: Any, exclude_ids: Any) -> Deferred[Any]:
        return self._store.query(filters, options, exclude_ids)


class WorkService(Service):
    namespace = "work"

    def __init__(self, middleware: Any) -> None:
        super().__init__(middleware)
        self.running: dict[str, Deferred[Job]] = {}
        self.release: dict[str, Deferred[Any]] = {}

    def _started(self, job: Job, name: str) -> Deferred[Any]:
        self.release[name] = Deferred()
        self.running.setdefault(name, Deferred()).callback(job)
        return self.release[name]

    def started(self, name: str) -> Deferred[Job]:
        return self.running.setdefault(name, Deferred())

    @job(abortable=True)
    async def hold(self, job: Job, name: str, description: str = "") -> Any:
        if description:
            job.set_description(description)
        return await self._started(job, name)

    @job(abortable=False)
    async def fixed(self, job: Job, name: str) -> Any:
        return await self._started(job, name)

    @job(logs=True)
    async def logged(self, job: Job, name: str, first: str, rest: str) -> None:
        await job.logs_fd_write(first.encode())
        await self._started(job, name)
        await job.logs_fd_write(rest.encode())


@attrs.define(eq=False)
class Subscriber:
    """
    An L{midjobs.events.ISubscriber} that keeps what it gets.
    """

    user: Any
    got: list[Notification] = attrs.Factory(list)
    _waiting: list[tuple[Callable[[Notification], bool], Deferred[Notification]]] = attrs.Factory(list)

    def send_event(self, notification: Notification) -> None:
        self.got.append(notification)
        for test, d in list(self._waiting):
            if test(notification):
                self._waiting.remove((test, d))
                d.callback(notification)

    def wait_for(self, test: Callable[[Notification], bool], timeout: float = 10) -> Deferred[Notification]:
        for notification in self.got:
            if test(notification):
                return succeed(notification)
        d: Deferred[Notification] = Deferred()
        self._waiting.append((test, d))
        return d.addTimeout(timeout, reactor)

    def of(self, job_id: int) -> list[tuple[str, dict[str, Any]]]:
        return [(n.msg, n.fields or {}) for n in self.got if n.id == job_id]


@attrs.define
class Node:
    name: str
    middleware: Middleware
    listener: PgListener
    bus: ClusterBus
    db: PgDatabase
    member: ClusterNode
    store: CountingStore

    @property
    def work(self) -> WorkService:
        service = self.middleware.services["work"]
        assert isinstance(service, WorkService)
        return service

    def subscribe(self, user: Any) -> Subscriber:
        subscriber = Subscriber(user)
        self.middleware.events.subscribe(subscriber, "core.get_jobs")
        return subscriber

    async def cut(self) -> None:
        """
        Cut the listener's session from the server's side: it connects
        again by itself.
        """
        pid = await self.listener.run(lambda conn: conn.info.backend_pid)
        await self.db.runQuery("SELECT pg_terminate_backend(?)", (pid,))


class Session:
    """
    Who calls: the job's owner.
    """

    def __init__(self, user: Any) -> None:
        self.user = user
        self.private_methods = False
        self.peer = "test"


class Cluster:
    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.nodes: list[Node] = []

    async def node(self, name: str, first_job_id: int, *, logins: bool = False) -> Node:
        """
        A node; with C{logins}, its middleware has the cluster's users, API
        keys and web sessions, and a portal on them.
        """
        # What is started so far is stopped if the node cannot be made: no
        # connection or thread outlives a failed test (the process would hang).
        async with contextlib.AsyncExitStack() as undo:
            db = PgDatabase(self.url, reactor, size=2, application_name=f"midjobs {name}")
            await db.open()
            undo.push_async_callback(db.close)
            listener = PgListener(self.url, reactor, application_name=f"midjobs {name}")
            await listener.start()
            undo.push_async_callback(listener.stop)
            member = ClusterNode(
                db,
                listener,
                reactor,
                name=name,
                advertise=f"http://{name}.example:6000",
                node_timeout=NODE_TIMEOUT,
                store_abort=abort_node_jobs,
            )
            await member.join()
            undo.push_async_callback(member.leave)
            store = PgJobStore(db, reactor, node=name, flush_interval=0.05)
            users = portal = None
            if logins:
                users = UserStore(db)
                await users.setup()
                api_keys = ApiKeyStore(db)
                await api_keys.setup()
                portal = make_portal(users, set(), api_keys=api_keys)
            middleware = Middleware(
                reactor, self.tmp_path / name, job_store=store, job_ids=CountedJobIds(first_job_id), node=name,
                users=users, portal=portal,
            )  # fmt: skip
            await store.setup(middleware.logs_dir)
            middleware.add_services([CoreService, WorkService])
            counting = CountingStore(store)
            bus = ClusterBus(
                reactor,
                name,
                db=db,
                listener=listener,
                jobs=middleware.jobs,
                store=counting,
                events=middleware.events,
                nodes=member.nodes,
                accepting=lambda: member.state is NodeState.ONLINE,
                catalogue=middleware.catalogue_changed_elsewhere,
                catalogue_missed=middleware.catalogue_missed,
            )
            middleware.cluster = bus
            member.on_reaped(bus.reaped)
            await bus.start()
            undo.push_async_callback(bus.stop)
            await middleware.start()
            node = Node(name, middleware, listener, bus, db, member, counting)
            # Made: the cluster stops it (L{stop}).
            undo.pop_all()
            self.nodes.append(node)
            return node

    async def stop(self) -> None:
        for node in self.nodes:
            for release in node.work.release.values():
                if not release.called:
                    release.callback(None)
            await node.middleware.stop("The test ended")
            await node.bus.stop()
            await node.middleware.job_store.stop()
            await node.member.leave()
            await node.listener.stop()
            await node.db.close()


@pytest_twisted.async_yield_fixture
async def cluster(postgres_database: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    db = PgDatabase(postgres_database, reactor, size=1)
    await db.open()
    try:
        await db.migrate()
    finally:
        await db.close()
    nodes = Cluster(postgres_database, tmp_path)
    yield nodes
    await nodes.stop()


async def _call(node: Node, user: Any, method: str, *params: Any) -> Job:
    job: Job = await node.middleware.call(method, *params, app=Session(user))
    return job


def _states(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    return [(msg, fields["state"]) for msg, fields in events]


@pytest_twisted.ensureDeferred
async def test_events_of_a_job_on_a_reach_b_in_order(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    watching = b.subscribe(ADMIN)
    held = await _call(a, ALICE, "work.hold", "one", "Holding")
    await a.work.started("one")
    held.set_progress(50, "half")
    a.work.release["one"].callback("done")
    ended = await watching.wait_for(lambda n: n.id == held.id and n.fields["state"] == "SUCCESS")
    assert ended.fields["result"] == "done"
    assert ended.fields["credentials"]["data"]["user_id"] == ALICE.user_id
    events = watching.of(held.id)
    assert events[0][0] == "added"
    assert all(msg == "changed" for msg, _ in events[1:])
    states = [fields["state"] for _, fields in events]
    # In order: never back to an earlier state.
    order = ["WAITING", "RUNNING", "SUCCESS"]
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states)
    # B's own jobs are not told twice: a's subscriber hears of it from its own queue only.
    on_a = a.subscribe(ADMIN)
    own = await _call(a, ALICE, "work.hold", "two")
    await a.work.started("two")
    a.work.release["two"].callback(None)
    await on_a.wait_for(lambda n: n.id == own.id and n.fields["state"] == "SUCCESS")
    await watching.wait_for(lambda n: n.id == own.id and n.fields["state"] == "SUCCESS")
    assert [msg for msg, _ in on_a.of(own.id)].count("added") == 1


@pytest_twisted.ensureDeferred
async def test_visibility_holds_across_nodes(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    admin, alice, bob = b.subscribe(ADMIN), b.subscribe(ALICE), b.subscribe(BOB)
    held = await _call(a, ALICE, "work.hold", "one")
    await a.work.started("one")
    a.work.release["one"].callback(None)
    await admin.wait_for(lambda n: n.id == held.id and n.fields["state"] == "SUCCESS")
    await alice.wait_for(lambda n: n.id == held.id and n.fields["state"] == "SUCCESS")
    assert bob.of(held.id) == []


@pytest_twisted.ensureDeferred
async def test_progress_is_coalesced(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    watching = b.subscribe(ADMIN)
    held = await _call(a, ALICE, "work.hold", "one")
    await a.work.started("one")
    await watching.wait_for(lambda n: n.id == held.id and n.fields["state"] == "RUNNING")
    # A burst within one turn of the reactor: one notification, the newest.
    for percent in range(1, 101):
        held.set_progress(percent, f"at {percent}")
    last = await watching.wait_for(lambda n: n.id == held.id and n.fields["progress"]["percent"] == 100)
    assert last.fields["progress"]["description"] == "at 100"
    progress = [f["progress"]["percent"] for msg, f in watching.of(held.id) if f["state"] == "RUNNING"]
    assert len(progress) < 10, progress
    assert progress == sorted(progress)


@pytest_twisted.ensureDeferred
async def test_a_record_too_big_for_a_notification_is_read_from_the_store(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    watching = b.subscribe(ADMIN)
    big = "x" * (2 * MAX_PAYLOAD)
    held = await _call(a, ALICE, "work.hold", "one", big)
    await a.work.started("one")
    a.work.release["one"].callback(None)
    ended = await watching.wait_for(lambda n: n.id == held.id and n.fields["state"] == "SUCCESS")
    assert ended.fields["description"] == big
    assert held.id in b.store.reads


@pytest_twisted.ensureDeferred
async def test_b_aborts_a_job_on_a(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    held = await _call(a, ALICE, "work.hold", "one")
    await a.work.started("one")
    record = await b.bus.record(held.id)
    assert record is not None and record["state"] == "RUNNING" and record["node"] == "a"
    waited = b.bus.wait(held.id)
    await b.bus.abort(record, "Stopped from b")
    final = await waited
    assert final["state"] == "ABORTED" and final["error"] == "Stopped from b"
    assert held.error == "Stopped from b"


@pytest_twisted.ensureDeferred
async def test_b_forces_the_abort_of_a_job_that_is_not_abortable(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    fixed = await _call(a, ADMIN, "work.fixed", "one")
    await a.work.started("one")
    record = await b.bus.record(fixed.id)
    assert record is not None and record["abortable"] is False
    waited = b.bus.wait(fixed.id)
    await b.bus.abort(record, "Job aborted by force")
    final = await waited
    assert final["state"] == "ABORTED" and final["error"] == "Job aborted by force"


@pytest_twisted.ensureDeferred
async def test_an_abort_a_did_not_hear_is_carried_out_when_its_listener_is_back(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    held = await _call(a, ALICE, "work.hold", "one")
    await a.work.started("one")
    # A no longer hears its channel: the wake-up is lost, the command is kept.
    await a.listener.unlisten(node_channel("a"))
    record = await b.bus.record(held.id)
    assert record is not None
    await b.bus.abort(record, "Stopped while away")
    assert await b.db.runQuery("SELECT node, job_id, command FROM node_commands") == [("a", held.id, "abort")]
    assert held.state.value == "RUNNING"
    # Its listener's session is cut; back, A reads its commands.
    await a.cut()
    await held.wait().addTimeout(10, reactor)
    assert held.error == "Stopped while away"
    assert await b.db.runQuery("SELECT count(*) FROM node_commands") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_remote_wait_wakes_with_progress(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    held = await _call(a, ALICE, "work.hold", "one")
    await a.work.started("one")
    seen: list[float] = []
    reached: Deferred[None] = Deferred()

    def progress(p: dict[str, Any]) -> None:
        seen.append(p["percent"])
        if p["percent"] == 70 and not reached.called:
            reached.callback(None)

    waited = b.bus.wait(held.id, progress)
    held.set_progress(70)
    await reached.addTimeout(10, reactor)
    a.work.release["one"].callback(42)
    final = await waited.addTimeout(10, reactor)
    assert final["state"] == "SUCCESS" and final["result"] == 42
    # A job that has ended: at once, from the store.
    again = await b.bus.wait(held.id).addTimeout(10, reactor)
    assert again["result"] == 42


@pytest_twisted.ensureDeferred
async def test_waiting_for_no_job(cluster: Cluster) -> None:
    b = await cluster.node("b", 1000)
    with pytest.raises(Exception, match="does not exist"):
        await b.bus.wait(123456)


@pytest_twisted.ensureDeferred
async def test_a_listener_back_resyncs_a_waiter(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    held = await _call(a, ALICE, "work.hold", "one")
    await a.work.started("one")
    waited = b.bus.wait(held.id)
    # Its first read of the store has answered: the job still runs.
    await until(lambda: held.id in b.store.answered)
    assert not waited.called
    # B no longer hears of the jobs: the end is told while it is deaf.
    await b.listener.unlisten(JOBS_CHANNEL)
    a.work.release["one"].callback("done")
    await held.wait()
    await a.bus.publisher.flush()
    assert not waited.called
    # Its listener's session is cut; back, B reads what it waits for.
    await b.cut()
    final = await waited.addTimeout(10, reactor)
    assert final["state"] == "SUCCESS" and final["result"] == "done"


@pytest_twisted.ensureDeferred
async def test_a_listener_back_tells_subscribers_what_they_missed(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    watching = b.subscribe(ADMIN)
    ending = await _call(a, ALICE, "work.hold", "one")
    await watching.wait_for(lambda n: n.id == ending.id and n.fields["state"] == "RUNNING")
    # B is deaf: one job ends and another is added meanwhile.
    await b.listener.unlisten(JOBS_CHANNEL)
    a.work.release["one"].callback("done")
    await ending.wait()
    added = await _call(a, ALICE, "work.hold", "two")
    await a.work.started("two")
    await a.bus.publisher.flush()
    # Back, B tells its subscribers the end and the new job, from the store.
    await b.cut()
    ended = await watching.wait_for(lambda n: n.id == ending.id and n.fields["state"] == "SUCCESS")
    assert ended.fields["result"] == "done"
    seen = await watching.wait_for(lambda n: n.id == added.id)
    assert seen.msg == "added" and seen.fields["node"] == "a" and seen.fields["state"] == "RUNNING"
    a.work.release["two"].callback("later")


@pytest_twisted.ensureDeferred
async def test_core_waits_for_and_aborts_a_job_of_another_node(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    first = await _call(a, ALICE, "work.hold", "one")
    second = await _call(a, ALICE, "work.hold", "two")
    await a.work.started("one")
    await a.work.started("two")
    waiting = await _call(b, BOB, "core.job_wait", first.id)
    # Bob may not see Alice's job.
    await waiting.wait()
    assert waiting.state.value == "FAILED" and "Job is not owned by current session" in waiting.error
    waiting = await _call(b, ALICE, "core.job_wait", first.id)
    a.work.release["one"].callback("first")
    assert await waiting.wait(raise_error=True) == "first"

    # Bob may not abort it; Alice may; then it ends ABORTED for her waiter on b.
    with pytest.raises(CallError) as refused:
        await b.middleware.call("core.job_abort", second.id, app=Session(BOB))
    assert refused.value.errno == errno.EPERM
    waiting = await _call(b, ALICE, "core.job_wait", second.id)
    await b.middleware.call("core.job_abort", second.id, app=Session(ALICE))
    with pytest.raises(JobAborted):
        await waiting.wait(raise_error=True)
    assert (await second.wait().addCallback(lambda _: second.error)) == "Job aborted"

    # A job that is not abortable: only by force, for a full administrator.
    fixed = await _call(a, ALICE, "work.fixed", "three")
    await a.work.started("three")
    with pytest.raises(CallError, match="not abortable"):
        await b.middleware.call("core.job_abort", fixed.id, app=Session(ALICE))
    with pytest.raises(CallError) as refused:
        await b.middleware.call("core.job_abort", fixed.id, {"force": True}, app=Session(ALICE))
    assert refused.value.errno == errno.EPERM
    await b.middleware.call("core.job_abort", fixed.id, {"force": True}, app=Session(ADMIN))
    await fixed.wait()
    assert fixed.error == "Job aborted by force"

    # No such job anywhere.
    with pytest.raises(CallError) as missing:
        await b.middleware.call("core.job_abort", 999999, app=Session(ADMIN))
    assert missing.value.errno == errno.ENOENT


async def _value(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def until(predicate: Callable[[], Any], timeout: float = 10) -> None:
    """
    Wait until C{predicate()} is true (or a Deferred or coroutine of it that
    fires true), looking every few milliseconds.
    """
    deadline = reactor.seconds() + timeout
    while not await _value(predicate()):
        assert reactor.seconds() < deadline, "timed out"
        await deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_the_log_of_a_job_on_a_is_followed_and_downloaded_on_b(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    first, rest = "first line é\n", "second line\n" + "x" * (3 * CHUNK_SIZE) + "\nlast\n"
    logged = await _call(a, ALICE, "work.logged", "one", first, rest)
    await a.work.started("one")

    async def shipped() -> bool:
        return bool(await b.bus.log_chunks(logged.id, 0))

    await until(shipped)
    name = f"core.job_log:{logged.id}"
    # Bob may not follow Alice's job's log.
    with pytest.raises(CallError):
        await b.middleware.events.prepare(Session(BOB), name)
    await b.middleware.events.prepare(Session(ALICE), name)
    following = Subscriber(ALICE)
    b.middleware.events.subscribe(following, name)
    await following.wait_for(lambda n: n.fields == {"data": first})
    a.work.release["one"].callback(None)
    await logged.wait()
    await following.wait_for(lambda n: n.fields["data"].endswith("last\n"))
    assert "".join(n.fields["data"] for n in following.got) == first + rest

    # Its download, through b, from the database.
    pipe = b.middleware.pipe(buffered=True)
    reading = await b.middleware.call("core.read_job_logs", logged.id, pipes=Pipes(output=pipe))
    data = b""
    while piece := await pipe.read(65536):
        data += piece
    assert data.decode() == first + rest
    assert await reading.wait(raise_error=True) == len(data)


def test_payloads_stay_under_the_limit_in_order() -> None:
    records = [{"id": i, "state": "RUNNING", "description": "d" * 3000} for i in range(1, 8)]
    items: list[Any] = [JobItem(ItemKind.CHANGED, r["id"], 10 + r["id"], r) for r in records]
    items.append(JobItem(ItemKind.ENDED, 99, 5, {"id": 99, "state": "SUCCESS", "description": "x" * MAX_PAYLOAD}))
    items.append(LogItem(7, 1234, True))
    payloads = pack("n1", items)
    assert len(payloads) > 1
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    read = [item for p in payloads for item in unpack(p).items]
    assert {unpack(p).node for p in payloads} == {"n1"}
    # The record too big for any payload goes as null; the others whole, in order.
    assert read[:-2] == items[:-2]
    assert read[-2] == JobItem(ItemKind.ENDED, 99, 5, None)
    assert read[-1] == LogItem(7, 1234, True)


def test_a_payload_that_is_not_one_is_refused() -> None:
    for text in ["[]", '{"n": 1, "e": []}', '{"n": "a", "e": [["z", 1, 2, null]]}', '{"n": "a", "e": [["c", 1, 2, 3]]}']:
        with pytest.raises(ValueError):
            unpack(text)


@pytest_twisted.ensureDeferred
async def test_the_reapers_ends_are_told_here_and_on_the_other_nodes(cluster: Cluster) -> None:
    a = await cluster.node("a", 1)
    b = await cluster.node("b", 1000)
    c = await cluster.node("c", 2000)
    held = await _call(c, ALICE, "work.hold", "one")
    await c.work.started("one")
    waited = b.bus.wait(held.id)
    on_a, on_b = a.subscribe(ADMIN), b.subscribe(ADMIN)
    # As a's reaper would write it once c is gone.
    final = {**held.to_record(), "state": "ABORTED", "error": "The node c stopped while this job was running"}
    a.bus.reaped([final])
    assert (await waited.addTimeout(10, reactor))["error"] == final["error"]
    for watching in (on_a, on_b):
        told = await watching.wait_for(lambda n: n.id == held.id and n.fields["state"] == "ABORTED")
        assert told.msg == "changed"
