"""
Job locks across the nodes of a cluster (L{PgLocks}): in one process, two
or three L{JobsQueue}s, each with its own database pool, listener and
L{PgLocks}, on one private PostgreSQL database; then two real
C{twistd midjobs} nodes running a locked job side by side.
"""

from __future__ import annotations

import errno
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Callable

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from midjobs.client import connect
from midjobs.cluster.locks import PgLocks
from midjobs.cluster.node import _free_locks
from midjobs.errors import CallError
from midjobs.job import Job, JobsQueue, JobState
from midjobs.locks import ILockManager
from midjobs.service import JobOptions
from midjobs.store.ids import PgJobIds
from midjobs.store.pg import PgDatabase
from midjobs.store.pg_listen import PgListener

if TYPE_CHECKING:
    from cluster_nodes import NodeStarter
    from postgres_server import PostgresServer

pytest_plugins = ["postgres_server", "cluster_nodes"]

ALICE = {"type": "LOGIN_PASSWORD", "data": {"username": "alice", "user_id": 2}}
BOB = {"type": "LOGIN_PASSWORD", "data": {"username": "bob", "user_id": 3}}


@attrs.define
class Node:
    """
    One node of the cluster in this process: its queue over its own locks.
    """

    name: str
    db: PgDatabase
    listener: PgListener
    locks: PgLocks
    jobs: JobsQueue
    freed: list[str] = attrs.Factory(list)


async def _node(url: str, name: str, **db_options: Any) -> Node:
    db = PgDatabase(url, reactor, size=2, application_name=f"midjobs {name}", **db_options)
    await db.open()
    await db.migrate()
    listener = PgListener(url, reactor, application_name=f"midjobs {name} listener")
    await listener.start()
    ids = PgJobIds(db, reactor, block=4)
    await ids.start()
    locks = PgLocks(db, reactor, node=name, listener=listener)
    jobs = JobsQueue(ids=ids, locks=locks, node=name)
    node = Node(name, db, listener, locks, jobs)
    heard = jobs.lock_freed

    def lock_freed(lock: str) -> None:
        node.freed.append(lock)
        heard(lock)

    jobs.lock_freed = lock_freed  # type: ignore[method-assign]  # to see what the queue is told
    await locks.attach(jobs)
    return node


@pytest_twisted.async_yield_fixture
async def nodes(postgres_database: str) -> AsyncIterator[list[Node]]:
    """
    The nodes a, b and c of one cluster.
    """
    made = [await _node(postgres_database, name) for name in ("a", "b", "c")]
    yield made
    for node in made:
        node.jobs.abort_all("the test ended")
    for node in made:
        await until(lambda: all(job.state.finished for job in node.jobs))
        await node.locks.stop()
        await node.listener.stop()
        await node.db.close()


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """
    Wait (letting the reactor run) until C{condition()} holds, or fail.
    """
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the condition did not hold in time")
        await deferLater(reactor, 0.01, lambda: None)


async def rows(node: Node, sql: str, *args: object) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await node.db.runQuery(sql, args)]


async def until_rows(node: Node, sql: str, expected: list[tuple[Any, ...]], seconds: float = 10) -> None:
    """
    Wait until the query C{sql} answers C{expected}, or fail.
    """
    deadline = time.monotonic() + seconds
    while (found := await rows(node, sql)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"{sql} answered {found}, not {expected}")
        await deferLater(reactor, 0.01, lambda: None)


@attrs.define
class Runs:
    """
    When each job ran: (name, start, end) in the order they started.
    """

    spans: list[tuple[str, float, float]] = attrs.Factory(list)
    started: list[str] = attrs.Factory(list)

    def assert_one_at_a_time(self) -> None:
        spans = sorted(self.spans, key=lambda span: span[1])
        for (before, _, end), (after, start, _) in zip(spans, spans[1:]):
            assert start >= end, f"{after} started before {before} ended"


def locked_job(
    runs: Runs, name: str, gate: Deferred[None] | None = None, lock: str = "disk",
    credentials: dict[str, Any] | None = ALICE, **options: Any,
) -> Job:
    """
    A job of C{lock} that notes when it runs, for a moment or until C{gate} fires.
    """

    async def run(job: Job) -> str:
        start = time.monotonic()
        runs.started.append(name)
        if gate is not None:
            await gate
        else:
            await deferLater(reactor, 0.02, lambda: None)
        runs.spans.append((name, start, time.monotonic()))
        return name

    return Job(reactor, f"t.{name}", JobOptions(lock=lock, **options), run, [], is_async=True, credentials=credentials)


async def queued(node: Node, job: Job) -> Job:
    added = await node.jobs.add(job)
    assert added is job and job.id
    return job


async def ended(*jobs: Job) -> None:
    await DeferredList([job.wait() for job in jobs])


def test_pg_locks_provide_the_interface(nodes: list[Node]) -> None:
    assert verifyObject(ILockManager, nodes[0].locks)


@pytest_twisted.ensureDeferred
async def test_jobs_of_one_lock_on_three_nodes_never_overlap(nodes: list[Node]) -> None:
    runs = Runs()
    adding = [
        node.jobs.add(locked_job(runs, f"{node.name}{i}", lock_queue_size=None))
        for i in range(4) for node in nodes
    ]  # fmt: skip
    added = [result for _, result in await DeferredList(adding, consumeErrors=True)]
    assert all(isinstance(job, Job) for job in added)
    await ended(*added)
    assert all(job.state is JobState.SUCCESS for job in added)
    assert len(runs.spans) == 12
    runs.assert_one_at_a_time()
    # Nothing is left behind once the last release is committed.
    await until_rows(nodes[0], "SELECT count(*) FROM job_locks", [(0,)])
    assert await rows(nodes[0], "SELECT count(*) FROM job_lock_queue") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_the_queue_is_first_come_first_served_across_nodes(nodes: list[Node]) -> None:
    a, b, c = nodes
    runs = Runs()
    gate: Deferred[None] = Deferred()
    holder = await queued(a, locked_job(runs, "a0", gate, lock_queue_size=None))
    await until(lambda: holder.state is JobState.RUNNING)
    order = [(b, "b1"), (c, "c2"), (a, "a3"), (b, "b4"), (c, "c5")]
    waiting = [await queued(node, locked_job(runs, name, lock_queue_size=None)) for node, name in order]
    assert all(job.state is JobState.WAITING for job in waiting)
    gate.callback(None)
    await ended(holder, *waiting)
    assert runs.started == ["a0"] + [name for _, name in order]
    runs.assert_one_at_a_time()


@pytest_twisted.ensureDeferred
async def test_a_queue_size_of_0_refuses_on_another_node(nodes: list[Node]) -> None:
    a, b, _ = nodes
    runs = Runs()
    gate: Deferred[None] = Deferred()
    holder = await queued(a, locked_job(runs, "a0", gate, lock_queue_size=0))
    with pytest.raises(CallError) as refused:
        await b.jobs.add(locked_job(runs, "b1", lock_queue_size=0))
    assert (refused.value.errno, refused.value.errmsg) == (errno.EBUSY, "This job is already being performed")
    gate.callback(None)
    await ended(holder)
    # Free again once a's release is committed (this queue records no
    # jobs: with a store, as soon as the end is): taken on b.
    await until_rows(b, "SELECT count(*) FROM job_locks", [(0,)])
    again = await queued(b, locked_job(runs, "b2", lock_queue_size=0))
    await ended(again)
    assert again.state is JobState.SUCCESS


@pytest_twisted.ensureDeferred
async def test_a_full_queue_hands_over_the_waiting_job_of_another_node(nodes: list[Node]) -> None:
    a, b, c = nodes
    runs = Runs()
    gate: Deferred[None] = Deferred()
    holder = await queued(a, locked_job(runs, "a0", gate, lock_queue_size=1))
    await until(lambda: holder.state is JobState.RUNNING)
    waiting = await queued(b, locked_job(runs, "b1", lock_queue_size=1))
    # Its place is numbered once it is queued (before it first asks for the lock).
    await until_rows(b, "SELECT job_id FROM job_lock_queue", [(waiting.id,)])
    # The same user on c is handed b's job, by its id.
    shared = await c.jobs.add(locked_job(runs, "c2", lock_queue_size=1))
    assert shared == waiting.id
    # Another user is refused.
    with pytest.raises(CallError) as refused:
        await c.jobs.add(locked_job(runs, "c3", credentials=BOB, lock_queue_size=1))
    assert (refused.value.errno, refused.value.errmsg) == (
        errno.EBUSY, "This job is already being performed by another user",
    )  # fmt: skip
    # On a's own node, the same: the job of b, by its id.
    assert await a.jobs.add(locked_job(runs, "a4", lock_queue_size=1)) == waiting.id
    gate.callback(None)
    await ended(holder, waiting)
    assert runs.started == ["a0", "b1"]


@pytest_twisted.ensureDeferred
async def test_a_lock_freed_on_one_node_starts_the_job_waiting_on_another(nodes: list[Node]) -> None:
    a, b, _ = nodes
    runs = Runs()
    gate: Deferred[None] = Deferred()
    holder = await queued(a, locked_job(runs, "a0", gate))
    waiting = await queued(b, locked_job(runs, "b1"))
    # It asked once and was told to wait; nothing asks again until the lock is freed.
    await until(lambda: waiting.waiting_for == "disk")
    assert waiting.state is JobState.WAITING
    b.freed.clear()
    gate.callback(None)
    await ended(holder, waiting)
    assert waiting.state is JobState.SUCCESS
    # b heard of it on midjobs_locks.
    assert b.freed == ["disk"]
    runs.assert_one_at_a_time()


@pytest_twisted.ensureDeferred
async def test_a_job_aborted_while_it_waits_leaves_the_queue(nodes: list[Node]) -> None:
    a, b, c = nodes
    runs = Runs()
    gate: Deferred[None] = Deferred()
    holder = await queued(a, locked_job(runs, "a0", gate))
    aborted = await queued(b, locked_job(runs, "b1"))
    after = await queued(c, locked_job(runs, "c2"))
    await until_rows(a, "SELECT node FROM job_lock_queue ORDER BY seq", [("b",), ("c",)])
    aborted.abort("not now")
    await until(lambda: aborted.state is JobState.ABORTED)
    await until_rows(a, "SELECT node FROM job_lock_queue ORDER BY seq", [("c",)])
    gate.callback(None)
    await ended(holder, after)
    assert after.state is JobState.SUCCESS and runs.started == ["a0", "c2"]


@pytest_twisted.ensureDeferred
async def test_the_lock_of_a_dead_node_freed_by_the_reaper_lets_the_next_job_start(nodes: list[Node]) -> None:
    a, b, _ = nodes
    runs = Runs()
    stuck = await queued(a, locked_job(runs, "a0", Deferred()))
    await until(lambda: stuck.state is JobState.RUNNING)
    waiting = await queued(b, locked_job(runs, "b1"))
    await until(lambda: waiting.waiting_for == "disk")
    # Node a is taken for dead: the reaper's transaction frees its locks.
    assert await a.db.runInteraction(_free_locks, "a") == ["disk"]
    await ended(waiting)
    assert waiting.state is JobState.SUCCESS and stuck.state is JobState.RUNNING
    stuck.abort("the node is gone")


@pytest_twisted.ensureDeferred
async def test_the_places_of_a_dead_node_freed_by_the_reaper_let_the_jobs_behind_them_start(
    nodes: list[Node],
) -> None:
    a, b, c = nodes
    runs = Runs()
    gate: Deferred[None] = Deferred()
    holder = await queued(c, locked_job(runs, "c0", gate))
    dead = await queued(a, locked_job(runs, "a1"))
    behind = await queued(b, locked_job(runs, "b2"))
    await until_rows(a, "SELECT node FROM job_lock_queue ORDER BY seq", [("a",), ("b",)])
    # Node a is taken for dead before its waiting job's record says so: the
    # reaper's transaction gives up its place, and the job behind it moves up.
    assert await c.db.runInteraction(_free_locks, "a") == ["disk"]
    await until_rows(c, "SELECT node FROM job_lock_queue ORDER BY seq", [("b",)])
    gate.callback(None)
    await ended(holder, behind)
    assert behind.state is JobState.SUCCESS and runs.started == ["c0", "b2"]
    dead.abort("the node is gone")


@pytest_twisted.ensureDeferred
async def test_a_holder_whose_end_is_recorded_holds_the_lock_no_more(nodes: list[Node]) -> None:
    """
    Its end is told once recorded, before its node deletes its row: a
    caller who heard of the end finds the lock free, as on one daemon.
    """
    _, b, _ = nodes
    await b.db.runOperation("INSERT INTO job_locks (name, job_id, node, since) VALUES ('disk', 999, 'x', 0)")
    with pytest.raises(CallError):
        await b.jobs.add(locked_job(Runs(), "b0", lock_queue_size=0))
    await b.db.runOperation(
        "INSERT INTO jobs (id, method, state, record, node) VALUES (999, 't.x0', 'SUCCESS', '{}', 'x')"
    )
    job = await queued(b, locked_job(Runs(), "b1", lock_queue_size=0))
    await ended(job)
    assert job.state is JobState.SUCCESS


@pytest_twisted.ensureDeferred
async def test_a_job_is_refused_with_the_reason_while_the_database_is_unavailable(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    node = await _node(postgres_database, "a", timeout=0.2)
    try:
        postgres_server.stop()
        try:
            with pytest.raises(CallError) as refused:
                await node.jobs.add(locked_job(Runs(), "a0"))
        finally:
            postgres_server.start()
        assert refused.value.errno == errno.ENOTCONN
        # The store's message, which names the database without a password.
        assert postgres_server.password not in refused.value.errmsg
        assert "the database postgresql://midjobs@127.0.0.1:" in refused.value.errmsg.lower()
        assert len(node.jobs) == 0
    finally:
        await node.locks.stop()
        await node.listener.stop()
        await node.db.close()


# Two real nodes.


@pytest_twisted.ensureDeferred
async def test_a_locked_job_on_two_real_nodes_never_runs_twice_at_once(
    postgres_database: str, cluster_nodes: NodeStarter
) -> None:
    n1, n2 = cluster_nodes("n1", "n2", database_url=postgres_database)
    one, two = await connect(n1.unix_url), await connect(n2.unix_url)
    try:
        sleep = 0.3
        data = {"sleep": sleep, "lock": "shared"}
        ids = [await client.call("core.job_test", data) for _ in range(2) for client in (one, two)]
        for job_id in ids:
            assert await one.call_job("core.job_wait", job_id) is True
        records = await two.call("core.get_jobs", [["id", "in", ids]], {"order_by": ["time_finished"]})
        assert {record["node"] for record in records} == {"n1", "n2"}
        assert all(record["state"] == "SUCCESS" for record in records)
        # A record's time_started is its creation: one at a time, the jobs
        # end at least their run time apart (the times are in milliseconds).
        ends = [record["time_finished"].timestamp() for record in records]
        for before, after in zip(ends, ends[1:]):
            assert after - before >= sleep - 0.002
    finally:
        await one.close()
        await two.close()
