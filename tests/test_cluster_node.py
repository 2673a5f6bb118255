"""
L{Node} against the private PostgreSQL server, with several nodes in this
process (each with its own listener and pool, as separate daemons have):
a name is held by one live node; a node whose heartbeat stops is reaped by
exactly one survivor within C{node_timeout} (plus one tick), its unfinished
jobs aborted and its locks freed; a node cut from the database fences
itself and comes back by itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread

from midjobs.cluster import Node, NodeNameTaken, NodeState
from midjobs.cluster.node import LOCKS_CHANNEL, _take_name
from midjobs.lifecycle import JobRecord
from midjobs.store.database import Cursor, Row
from midjobs.store.history import node_stopped
from midjobs.store.pg import PgDatabase
from midjobs.store.pg_jobs import abort_node_jobs
from midjobs.store.pg_listen import PgListener

if TYPE_CHECKING:
    from postgres_server import PostgresServer

#: The fixtures postgres_server and postgres_database.
pytest_plugins = ["postgres_server"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: How long a test waits for what must happen.
TIMEOUT = 30.0
#: The nodes' timeout in these tests: heartbeats every 0.2 s.
NODE_TIMEOUT = 1.0
#: What a reaping may take beyond a heartbeat interval: its transaction, on a
#: busy machine.
SLACK = 0.5

class GatedDatabase:
    """
    A L{PgDatabase} whose interactions a closed gate holds back: the node is
    cut from the database while the others reach it.
    """

    def __init__(self, url: str, name: str) -> None:
        self.db = PgDatabase(url, reactor, size=2, application_name=f"midjobs {name}")
        self.gate: Deferred[None] | None = None

    def cut(self) -> None:
        self.gate = Deferred()

    def mend(self) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.callback(None)

    def _after_gate(self, call: Callable[[], Deferred[_T]]) -> Deferred[_T]:
        if self.gate is None:
            return call()
        passed: Deferred[None] = Deferred()
        self.gate.addCallback(lambda _: passed.callback(None))
        return passed.addCallback(lambda _: call())

    def runInteraction(
        self, interaction: Callable[Concatenate[Cursor, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> Deferred[_T]:
        return self._after_gate(lambda: self.db.runInteraction(interaction, *args, **kwargs))

    def runQuery(self, sql: str, parameters: Sequence[object] | None = None, /) -> Deferred[list[Row]]:
        return self._after_gate(lambda: self.db.runQuery(sql, parameters))

    def runOperation(self, sql: str, parameters: Sequence[object] | None = None, /) -> Deferred[None]:
        return self._after_gate(lambda: self.db.runOperation(sql, parameters))


class Member:
    """
    One node with its own pool and listener, and what its callbacks saw.
    """

    def __init__(self, url: str, name: str, aborts: list[tuple[str, str]]) -> None:
        self.pool = GatedDatabase(url, name)
        self.listener = PgListener(url, reactor, application_name=f"midjobs {name}")

        def store_abort(txn: Cursor, error: str, now: float, node: str) -> list[JobRecord]:
            aborts.append((name, node))
            return abort_node_jobs(txn, error, now, node)

        self.node = Node(
            self.pool,
            self.listener,
            reactor,
            name=name,
            advertise=f"http://{name}.example:6000",
            node_timeout=NODE_TIMEOUT,
            store_abort=store_abort,
        )
        self.reaped: list[list[JobRecord]] = []
        self.events: list[str] = []
        self.node.on_reaped(self.reaped.append)
        self.node.on_fenced(lambda: self.events.append("fenced"))
        self.node.on_rejoined(lambda: self.events.append("rejoined"))

    async def start(self) -> None:
        await self.pool.db.open()
        await self.listener.start()

    async def stop(self) -> None:
        self.pool.mend()
        await self.node.leave()
        await self.listener.stop()
        await self.pool.db.close()


class Cluster:
    """
    The members a test made, stopped at its end.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.members: list[Member] = []
        #: Every store_abort call: (the node that called it, the node whose jobs).
        self.aborts: list[tuple[str, str]] = []

    async def member(self, name: str, *, join: bool = True) -> Member:
        member = Member(self.url, name, self.aborts)
        self.members.append(member)
        await member.start()
        if join:
            await member.node.join()
        return member

    async def stop(self) -> None:
        for member in self.members:
            await member.stop()


@pytest_twisted.async_yield_fixture
async def cluster(postgres_database: str) -> Any:
    db = PgDatabase(postgres_database, reactor, size=1)
    await db.open()
    try:
        await db.migrate()
    finally:
        await db.close()
    cluster = Cluster(postgres_database)
    yield cluster
    await cluster.stop()


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """
    Wait until C{predicate()} holds, looking every few milliseconds.
    """
    deadline = reactor.seconds() + timeout
    while not predicate():
        assert reactor.seconds() < deadline, "timed out"
        await deferLater(reactor, 0.005, lambda: None)


def _sql(url: str, sql: str, parameters: Sequence[object] = ()) -> Deferred[list[Row]]:
    def run() -> list[Row]:
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(sql, parameters)
            return cursor.fetchall() if cursor.description else []

    return deferToThread(run)


async def _add_job(url: str, job_id: int, node: str, state: str, lock: str | None = None) -> None:
    record = {"id": job_id, "method": "test.job", "state": state, "error": None, "time_started": None,
              "time_finished": None, "logs_path": None, "node": node}
    await _sql(
        url,
        "INSERT INTO jobs (id, method, state, record, node, lock_name) VALUES (%s, 'test.job', %s, %s, %s, %s)",
        (job_id, state, json.dumps(record), node, lock),
    )
    if lock is not None:
        await _sql(url, "INSERT INTO job_locks (name, job_id, node, since) VALUES (%s, %s, %s, 0)", (lock, job_id, node))


@pytest_twisted.ensureDeferred
async def test_join_list_leave(cluster: Cluster) -> None:
    """
    Joined nodes are listed ONLINE with their advertise URL, heartbeat and
    running jobs; a node that left is OFFLINE, has no advertise URL to use,
    and its name can be taken again.
    """
    n1 = await cluster.member("n1")
    n2 = await cluster.member("n2")
    assert n1.node.state is NodeState.ONLINE and n1.node.epoch == 1
    await _add_job(cluster.url, 1, "n1", "RUNNING")
    await _add_job(cluster.url, 2, "n1", "SUCCESS")
    nodes = await n2.node.nodes()
    assert [(n["name"], n["advertise"], n["state"], n["running_jobs"]) for n in nodes] == [
        ("n1", "http://n1.example:6000", "ONLINE", 1),
        ("n2", "http://n2.example:6000", "ONLINE", 0),
    ]
    assert all(n["heartbeat"].tzinfo is not None for n in nodes)
    assert await n2.node.advertise_of("n1") == "http://n1.example:6000"
    assert await n2.node.advertise_of("n9") is None

    # Asking the session for the name again does not take it twice (once
    # given back, it is free).
    assert await n1.listener.run(lambda conn: _take_name(conn, "n1"))
    await n1.node.leave()
    assert n1.node.state is NodeState.OFFLINE and not n1.node.holds_name
    assert [n["state"] for n in await n2.node.nodes()] == ["OFFLINE", "ONLINE"]
    assert await n2.node.advertise_of("n1") is None

    # The same name again: a new incarnation, whose start aborts what the
    # previous one left unfinished.
    again = await cluster.member("n1")
    assert again.node.epoch == 2
    assert [r["id"] for (r,) in again.reaped] == [1]
    assert again.reaped[0][0]["error"] == node_stopped("n1") == "The node n1 stopped while this job was running"
    rows = await _sql(cluster.url, "SELECT id, state, record::jsonb->>'error' FROM jobs ORDER BY id")
    assert rows == [(1, "ABORTED", "The node n1 stopped while this job was running"), (2, "SUCCESS", None)]
    assert n1.events == again.events == n2.events == []


@pytest_twisted.ensureDeferred
async def test_same_name_refused(cluster: Cluster) -> None:
    """
    A second node with the name of a live one is refused with one line that
    says who has it, and changes nothing.
    """
    first = await cluster.member("n1")
    second = await cluster.member("n1", join=False)
    with pytest.raises(NodeNameTaken) as refused:
        await second.node.join()
    message = str(refused.value)
    assert re.fullmatch(r"node n1 is already online \(host \S+, pid \d+, last heartbeat \d+ s ago\)", message)
    assert "\n" not in message
    assert second.node.state is NodeState.OFFLINE
    rows = await _sql(cluster.url, "SELECT epoch, state FROM nodes")
    assert rows == [(1, "ONLINE")]
    assert first.node.state is NodeState.ONLINE


@pytest_twisted.ensureDeferred
async def test_name_free_when_session_ends(cluster: Cluster) -> None:
    """
    The name is held by the listener's session: when that session ends (a
    killed process's does), another node takes the name at once, without
    waiting for the timeout.  The first one's heartbeat then finds its row
    taken: it fences itself and cannot join again.
    """
    first = await cluster.member("n1")
    second = await cluster.member("n1", join=False)
    pid = await first.listener.run(lambda conn: conn.info.backend_pid)
    await first.listener.stop()
    # The server ends the session (and frees its locks) just after the close.
    deadline = reactor.seconds() + TIMEOUT
    while await _sql(cluster.url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)):
        assert reactor.seconds() < deadline, "timed out"
        await deferLater(reactor, 0.01, lambda: None)
    await second.node.join()
    assert second.node.epoch == 2 and second.node.holds_name
    await until(lambda: first.events == ["fenced"])
    assert first.node.state is NodeState.DEGRADED
    assert second.node.state is NodeState.ONLINE
    assert await _sql(cluster.url, "SELECT name, state, epoch FROM nodes") == [("n1", "ONLINE", 2)]


@pytest_twisted.ensureDeferred
async def test_dead_node_reaped_once(cluster: Cluster) -> None:
    """
    A node whose heartbeat stops is reaped by exactly one of the two
    survivors within node_timeout (plus one tick): its unfinished jobs are
    ABORTED with the node message, its finished ones kept, its locks freed
    and notified; the other nodes' locks stay.
    """
    n1 = await cluster.member("n1")
    n2 = await cluster.member("n2")
    n3 = await cluster.member("n3")
    await _add_job(cluster.url, 1, "n3", "RUNNING", lock="l1")
    await _add_job(cluster.url, 2, "n3", "WAITING")
    await _add_job(cluster.url, 3, "n3", "SUCCESS")
    await _add_job(cluster.url, 4, "n1", "RUNNING", lock="l2")
    freed: list[str] = []
    watcher = PgListener(cluster.url, reactor)
    await watcher.listen(LOCKS_CHANNEL, freed.append)
    await watcher.start()
    try:
        cluster.aborts.clear()
        n3.pool.cut()
        killed = reactor.seconds()
        await until(lambda: bool(n1.reaped or n2.reaped))
        elapsed = reactor.seconds() - killed
        assert elapsed <= NODE_TIMEOUT + n1.node.heartbeat_interval + SLACK, elapsed

        (records,) = n1.reaped + n2.reaped
        assert [(r["id"], r["state"], r["error"]) for r in records] == [
            (1, "ABORTED", "The node n3 stopped while this job was running"),
            (2, "ABORTED", "The node n3 stopped while this job was running"),
        ]
        rows = await _sql(cluster.url, "SELECT id, state FROM jobs ORDER BY id")
        assert rows == [(1, "ABORTED"), (2, "ABORTED"), (3, "SUCCESS"), (4, "RUNNING")]
        assert await _sql(cluster.url, "SELECT name, node FROM job_locks") == [("l2", "n1")]
        await until(lambda: freed == ["l1"])
        assert await _sql(cluster.url, "SELECT name, state FROM nodes ORDER BY name") == [
            ("n1", "ONLINE"),
            ("n2", "ONLINE"),
            ("n3", "OFFLINE"),
        ]
        # n3 fenced itself first, the survivors did not.
        assert n3.events == ["fenced"] and n3.node.state is NodeState.DEGRADED
        assert n1.events == n2.events == []

        # Several more rounds of both survivors: nobody reaps n3 again.
        await _rounds(cluster.url, ("n1", "n2"))
        reapers = [reaper for reaper, dead in cluster.aborts if dead == "n3"]
        assert len(reapers) == 1 and reapers[0] in ("n1", "n2")
        assert len(n1.reaped) + len(n2.reaped) == 1
    finally:
        await watcher.stop()


async def _rounds(url: str, names: tuple[str, ...], rounds: int = 3) -> None:
    """
    Wait until the heartbeats of C{names} are C{rounds} intervals newer
    than now (each node's reaper round follows its heartbeat).
    """
    (now,) = (await _sql(url, "SELECT extract(epoch from clock_timestamp())::double precision"))[0]
    threshold = now + rounds * NODE_TIMEOUT / 5
    deadline = reactor.seconds() + TIMEOUT
    while True:
        rows = await _sql(url, "SELECT count(*) FROM nodes WHERE name = ANY(%s) AND heartbeat > %s", (list(names), threshold))
        if rows[0][0] == len(names):
            return
        assert reactor.seconds() < deadline, "timed out"
        await deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.ensureDeferred
async def test_reaped_node_joins_again(cluster: Cluster) -> None:
    """
    A node cut from the database fences itself before the others reap it;
    when it reaches the database again its heartbeat finds its row taken
    offline, so it joins again as a new incarnation and is online.
    """
    n1 = await cluster.member("n1")
    n2 = await cluster.member("n2")
    await _add_job(cluster.url, 1, "n2", "RUNNING")
    n2.pool.cut()
    await until(lambda: bool(n1.reaped))
    assert n2.events == ["fenced"]
    n2.pool.mend()
    await until(lambda: n2.events == ["fenced", "rejoined"])
    assert n2.node.state is NodeState.ONLINE and n2.node.epoch == 2
    assert await _sql(cluster.url, "SELECT name, state, epoch FROM nodes ORDER BY name") == [
        ("n1", "ONLINE", 1),
        ("n2", "ONLINE", 2),
    ]
    assert n1.events == []


@pytest_twisted.ensureDeferred
async def test_fenced_while_database_down(cluster: Cluster, postgres_server: PostgresServer) -> None:
    """
    When the database stops, every node fences itself after 0.8
    node_timeout; when it is back, every node is online again by itself
    (those reaped meanwhile by the first one back join again) and holds
    its name again.
    """
    members = [await cluster.member(name) for name in ("n1", "n2")]
    await deferToThread(postgres_server.stop)
    try:
        await until(lambda: all(m.events == ["fenced"] for m in members))
        assert all(m.node.state is NodeState.DEGRADED for m in members)
    finally:
        await deferToThread(postgres_server.start)
    await until(lambda: all(m.events == ["fenced", "rejoined"] for m in members))
    await until(lambda: all(m.listener.state.name == "LISTENING" for m in members))
    assert all(m.node.state is NodeState.ONLINE for m in members)
    assert [row[0] for row in await _sql(cluster.url, "SELECT state FROM nodes")] == ["ONLINE", "ONLINE"]
    # The names are held again by the listeners' new sessions.
    intruder = await cluster.member("n1", join=False)
    await until(lambda: members[0].node.holds_name)
    with pytest.raises(NodeNameTaken):
        await intruder.node.join()


class _ScriptedDatabase:
    """
    A database whose transactions the test answers: each interaction waits
    in C{calls} as (its function's name, its Deferred).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, Deferred[Any]]] = []

    def runInteraction(self, interaction: Callable[..., Any], *args: object, **kwargs: object) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((interaction.__name__, d))
        return d

    def runOperation(self, sql: str, parameters: Sequence[object] | None = None, /) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.calls.append((sql, d))
        return d

    def answer(self, name: str, result: object) -> None:
        (index,) = [i for i, (called, _) in enumerate(self.calls) if called == name]
        _, d = self.calls.pop(index)
        d.callback(result)

    def pending(self) -> list[str]:
        return [name for name, _ in self.calls]


class _SessionHolder:
    """
    A listener whose session always holds the name.
    """

    def run(self, fn: Callable[..., Any]) -> Deferred[bool]:
        return succeed(True)

    def on_lost(self, callback: Callable[..., object]) -> None:
        pass

    def on_reconnect(self, callback: Callable[..., object]) -> None:
        pass


def _scripted_node() -> tuple[Node, _ScriptedDatabase, Clock, list[str]]:
    clock = Clock()
    db = _ScriptedDatabase()
    node = Node(db, _SessionHolder(), clock, name="n1", advertise="http://n1:6000",  # type: ignore[arg-type]
                node_timeout=10.0, store_abort=abort_node_jobs)
    events: list[str] = []
    node.on_fenced(lambda: events.append("fenced"))
    node.on_rejoined(lambda: events.append("rejoined"))
    node.on_reaped(lambda records: events.append(f"reaped {[r['id'] for r in records]}"))
    return node, db, clock, events


def test_fence_timing() -> None:
    """
    With node_timeout 10 s: a heartbeat every 2 s; the fence falls 8 s after
    the last committed heartbeat was sent, whatever is still in flight; a
    heartbeat that commits too late to count does not bring the node back,
    the next one in time does; the reaper runs after each committed
    heartbeat.
    """
    node, db, clock, events = _scripted_node()
    joined = node.join()
    db.answer("_register", (1, [], []))
    assert joined.called and node.state is NodeState.ONLINE
    assert node.heartbeat_interval == 2.0

    clock.advance(2)  # t=2: heartbeat sent, answered in time.
    db.answer("_heartbeat", True)
    db.answer("_reap", [("n2", [{"id": 7}], ["l1"])])
    assert events == ["reaped [7]"]
    clock.advance(2)  # t=4: sent, not answered (the database is cut).
    assert db.pending() == ["_heartbeat"]
    clock.advance(5.9)  # t=9.9: 7.9 s after the last committed one (t=2) was sent.
    assert node.state is NodeState.ONLINE
    clock.advance(0.1)  # t=10
    assert node.state is NodeState.DEGRADED and events == ["reaped [7]", "fenced"]

    clock.advance(3)  # t=13: the heartbeat of t=4 commits, 9 s late: it does not count.
    db.answer("_heartbeat", True)
    db.answer("_reap", [])
    assert node.state is NodeState.DEGRADED
    clock.advance(1)  # t=14: the next one, answered at once.
    db.answer("_heartbeat", True)
    assert node.state is NodeState.ONLINE and events[-1] == "rejoined"
    db.answer("_reap", [])
    assert db.pending() == []


def test_reaped_joins_again_in_the_same_tick() -> None:
    """
    A heartbeat that finds the row taken (zero rows: reaped) fences, writes
    a new incarnation, and the node is online again with its new epoch.
    """
    node, db, clock, events = _scripted_node()
    node.join()
    db.answer("_register", (1, [], []))
    clock.advance(2)
    db.answer("_heartbeat", False)
    assert node.state is NodeState.DEGRADED and events == ["fenced"]
    assert db.pending() == ["_register"]
    db.answer("_register", (2, [{"id": 3}], []))
    assert node.state is NodeState.ONLINE and node.epoch == 2
    assert events == ["fenced", "reaped [3]", "rejoined"]
    assert db.pending() == ["_reap"]
    db.answer("_reap", [])
    left = node.leave()
    assert db.pending() == ["UPDATE nodes SET state = 'OFFLINE' WHERE name = ? AND epoch = ?"]
    db.calls.pop()[1].callback(None)
    assert left.called and node.state is NodeState.OFFLINE
    assert clock.getDelayedCalls() == []
