"""
Job history: records in SQLite that outlive the daemon, queried with memory as one list.

Daemons run in this process (restarted on the same state directory where a
test needs it); the store is also tested on its own, on SQLite and on
PostgreSQL (the private server of C{postgres_server}), and its write batching
with a fake clock.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from midjobs import wire_json
from midjobs.client import ClientCallError, connect, download
from midjobs.config import Settings
from midjobs.daemon import Daemon
from midjobs.query import filter_list, validate_options
from midjobs.store import CUT_OFF, SQLiteJobStore, StoreClosed, close_database, open_database, query_jobs
from midjobs.store._batch import WriteBatch
from midjobs.store._sqlquery import translate
from midjobs.store.jobs import DELETE_BATCH, SqlJobStore
from midjobs.store.pg import PgDatabase
from midjobs.store.pg_jobs import PgJobStore

from conftest import ADMIN, RunningDaemon

#: The fixtures postgres_server and postgres_database.
pytest_plugins = ["postgres_server"]

# Helpers.


async def start(settings: Settings) -> RunningDaemon:
    service = Daemon(settings, reactor)
    service.startService()
    await service.ready
    port = service.listeners[0].port.getHost().port
    return RunningDaemon(service, Path(settings.state_dir), settings.socket_path, port)


async def admin_of(daemon: RunningDaemon, create: bool = True) -> Any:
    if create:
        await daemon.middleware.users.create({"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
    client = await connect(daemon.ws_url, reactor=reactor)
    assert await client.login(*ADMIN)
    return client


def stored_rows(state_dir: Path) -> dict[int, dict[str, Any]]:
    """
    The jobs table as SQLite has it: id -> the row's columns, the record decoded.
    """
    with sqlite3.connect(state_dir / "midjobs.db") as db:
        rows = db.execute("SELECT id, method, state, time_started, time_finished, logs_path, record FROM jobs")
        return {
            row[0]: {
                "method": row[1], "state": row[2], "time_started": row[3],
                "time_finished": row[4], "logs_path": row[5], "record": json.loads(row[6]),
            }
            for row in rows
        }


class LastRecords:
    """
    The last record of each job, as core.get_jobs events told it: the oracle of queries.
    """

    def __init__(self) -> None:
        self.records: dict[int, dict[str, Any]] = {}
        self._waiters: list[tuple[Any, Deferred[None]]] = []

    def __call__(self, msg: str, collection: str, id: int, fields: dict[str, Any]) -> None:
        self.records[id] = fields
        for waiter in list(self._waiters):
            if waiter[0](fields):
                self._waiters.remove(waiter)
                waiter[1].callback(None)

    def wait_for(self, predicate: Any) -> Deferred[None]:
        if any(predicate(f) for f in self.records.values()):
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append((predicate, d))
        return d.addTimeout(10, reactor)

    def rows(self) -> list[dict[str, Any]]:
        return [self.records[i] for i in sorted(self.records)]


@pytest_twisted.async_yield_fixture
async def restartable(settings: Settings) -> AsyncIterator[list[RunningDaemon]]:
    """
    A list to put started daemons in; those still running are stopped after the test.
    """
    daemons: list[RunningDaemon] = []
    yield daemons
    for daemon in daemons:
        if daemon.daemon.running:
            await daemon.daemon.stopService()


# Records outlive the daemon.


@pytest_twisted.ensureDeferred
async def test_finished_jobs_outlive_a_restart(settings: Settings, restartable: list[RunningDaemon]) -> None:
    first = await start(settings)
    restartable.append(first)
    client = await admin_of(first)
    ok = await client.call("core.job_test", {"description": "kept"})
    assert await client.call_job("core.job_wait", ok) is True
    with pytest.raises(ClientCallError):
        await client.call_job("sample.failing_job", "it broke")
    logs = await client.call("sample.logging_job", 25)
    assert await client.call_job("core.job_wait", logs) == 25
    transient = await client.call("sample.transient_job")
    before = await client.call("core.get_jobs")
    assert [j["id"] for j in before] == [1, 2, 3, 4, 5]  # the job_waits are jobs too
    await client.close()
    await first.daemon.stopService()

    rows = stored_rows(first.state_dir)
    assert sorted(rows) == [1, 2, 3, 4, 5] and transient == 6
    assert all(row["method"] != "sample.transient_job" for row in rows.values())
    assert rows[logs]["logs_path"] == str(first.state_dir / "jobs" / f"{logs}.log")

    second = await start(settings)
    restartable.append(second)
    client = await admin_of(second, create=False)
    after = await client.call("core.get_jobs")
    assert after == before
    failed = await client.call("core.get_jobs", [["method", "=", "sample.failing_job"]], {"get": True})
    assert (failed["state"], failed["error"]) == ("FAILED", "[EINVAL] it broke")
    assert "CallError" in failed["exception"]
    kept = await client.call("core.get_jobs", [["id", "=", logs]], {"get": True})
    assert kept["logs_excerpt"].splitlines()[-1] == "line 24"
    assert Path(kept["logs_path"]).read_text().splitlines()[-1] == "line 24"
    # Ids go on after the highest ever given, the transient job's (never stored) included.
    assert await client.call("core.job_test") == 7
    # The log of a job from before the restart downloads like any other.
    url = await client.call("core.job_download_logs", logs, "job.log")
    copy = io.BytesIO()
    await download(second.http_url, url, copy, reactor=reactor)
    assert copy.getvalue() == Path(kept["logs_path"]).read_bytes()
    await client.close()


@pytest_twisted.ensureDeferred
async def test_creation_and_end_are_durable_before_they_are_told(admin_client: Any, daemon: RunningDaemon) -> None:
    db = sqlite3.connect(daemon.state_dir / "midjobs.db")
    seen: dict[int, list[tuple[str, str | None]]] = {}

    def event(msg: str, collection: str, id: int, fields: dict[str, Any]) -> None:
        row = db.execute("SELECT state FROM jobs WHERE id = ?", (id,)).fetchone()
        seen.setdefault(id, []).append((fields["state"], row[0] if row else None))

    await admin_client.subscribe("core.get_jobs", event)
    legacy = await admin_client.call("core.job_test", {"sleep": 0.1})
    assert db.execute("SELECT id FROM jobs WHERE id = ?", (legacy,)).fetchone() == (legacy,)
    await admin_client.call("core.set_options", {"legacy_jobs": False})
    assert await admin_client.call("core.job_test") is True
    newest = db.execute("SELECT id, state FROM jobs ORDER BY id DESC LIMIT 1").fetchone()
    assert newest[1] == "SUCCESS" and newest[0] > legacy
    await admin_client.call("core.set_options", {"legacy_jobs": True})
    assert await admin_client.call_job("core.job_wait", legacy) is True
    # Every event came after the job was stored, and each final state after it was stored.
    assert len(seen) == 3 and seen[legacy][0][0] == "WAITING"
    for states in seen.values():
        assert all(stored is not None for _, stored in states)
        final = [(told, stored) for told, stored in states if told in ("SUCCESS", "FAILED", "ABORTED")]
        assert all(told == stored for told, stored in final)
    db.close()


@pytest.fixture
def small(settings: Settings) -> Settings:
    return attrs.evolve(settings, keep_finished_jobs=3)


@pytest_twisted.ensureDeferred
async def test_get_jobs_is_one_list_over_memory_and_store(small: Settings, restartable: list[RunningDaemon]) -> None:
    daemon = await start(small)
    restartable.append(daemon)
    client = await admin_of(daemon)
    oracle = LastRecords()
    await client.subscribe("core.get_jobs", oracle)
    for i in range(4):
        await client.call_job("core.job_test", {"description": f"job {i}"})
    for call in (("core.job_test", {"error": "no"}), ("sample.failing_job", "boom")):
        with pytest.raises(ClientCallError):
            await client.call_job(*call)
    await client.call_job("sample.described", "bob")
    await client.call_job("sample.logging_job", 3)
    await client.call_job("sample.thread_job", 2)
    aborted = await client.call("core.job_test", {"sleep": 60})
    await oracle.wait_for(lambda f: f["id"] == aborted and f["state"] == "RUNNING")
    await client.call("core.job_abort", aborted)
    await oracle.wait_for(lambda f: f["id"] == aborted and f["state"] == "ABORTED")
    running = await client.call("sample.exclusive", 60)
    waiting = await client.call("sample.thread_wait_abort")
    await oracle.wait_for(lambda f: f["id"] == running and f["state"] == "RUNNING")
    await oracle.wait_for(lambda f: f["id"] == waiting and f["progress"]["description"] == "waiting")
    await client.call("sample.transient_job")

    # Most finished jobs left memory: they are answered from the store.
    in_memory = {job.id for job in daemon.middleware.jobs}
    assert len(in_memory) == 5 and {running, waiting} <= in_memory
    rows = oracle.rows()
    assert len(rows) == len(stored_rows(daemon.state_dir)) == 12
    some = [rows[1]["id"], rows[6]["id"], running]
    queries: list[tuple[Any, Any]] = [
        ([], {}),
        ([["id", "=", rows[2]["id"]]], {"get": True}),
        ([["id", "in", some]], {}),
        ([["id", "nin", some]], {"order_by": ["-id"]}),
        ([["id", ">", 2], ["id", "<=", 9]], {"order_by": ["-state"]}),
        ([["method", "=", "core.job_test"], ["state", "=", "SUCCESS"]], {"limit": 2}),
        ([["method", "=", "core.job_test"], ["state", "=", "SUCCESS"]], {"order_by": ["-id"], "limit": 2, "offset": 1}),
        ([["method", "=", "core.job_test"]], {"count": True}),
        ([["state", "in", ["FAILED", "ABORTED"]]], {"select": ["id", "error", "state"]}),
        ([["state", "!=", "SUCCESS"]], {"count": True}),
        ([["state", "=", "RUNNING"]], {"order_by": ["method"]}),
        ([["description", "^", "job"]], {"order_by": ["-time_started"], "select": ["id", "description"]}),
        ([["OR", [["id", "<", 3], ["method", "=", "sample.failing_job"]]]], {}),
        ([["result", "=", True]], {"order_by": ["method", "-id"], "limit": 3}),
        ([], {"order_by": ["nulls_first:time_finished"], "limit": 5}),
        ([], {"order_by": ["-time_finished"], "limit": 4, "offset": 2}),
        ([], {"count": True}),
        ([["progress.percent", "=", 100]], {"count": True}),
        ([["progress.percent", "<", 100]], {"select": ["id", "progress.percent"]}),
        ([], {"get": True, "order_by": ["-id"]}),
        ([["method", "Cin", ["SAMPLE.DESCRIBED", "core.job_wait"]]], {}),
        ([["state", "=", "SUCCESS"]], {"offset": 3, "limit": 2}),
        ([["logs_excerpt", "!=", None]], {"select": ["id", "logs_excerpt"]}),
    ]
    for filters, options in queries:
        answer = await client.call("core.get_jobs", filters, options)
        assert answer == filter_list(rows, filters, options), (filters, options)
    with pytest.raises(ClientCallError) as error:
        await client.call("core.get_jobs", [["id", "=", 999]], {"get": True})
    assert error.value.errname == "ENOENT"
    with pytest.raises(ClientCallError):
        await client.call("core.get_jobs", [["id", "bogus", 1]])
    await client.close()


# The store on its own.


def synthetic(n: int) -> list[dict[str, Any]]:
    """
    C{n} job records with a spread of methods, states, times, results and nulls.
    """
    methods = ["core.job_test", "sample.a", "sample.b", "z.last"]
    states = ["SUCCESS", "FAILED", "ABORTED", "SUCCESS", "RUNNING", "WAITING"]
    records = []
    for i in range(1, n + 1):
        state = states[i % len(states)]
        started = wire_json.from_wire({"$date": 1_700_000_000_000 + (i * 7919) % 50_000})
        finished = None if state in ("RUNNING", "WAITING") else wire_json.from_wire({"$date": 1_700_000_100_000 + (i * 104729) % 9000})
        records.append({
            "id": i, "message_ids": [i], "method": methods[(i * 3) % len(methods)], "arguments": [{"n": i}],
            "transient": False, "description": None if i % 5 == 0 else f"step {i % 11}", "abortable": bool(i % 2),
            "logs_path": None, "logs_excerpt": None,
            "progress": {"percent": (i * 13) % 101, "description": "", "extra": None},
            "result": i % 4 if state == "SUCCESS" else None, "result_encoding_error": None,
            "error": "bad" if state in ("FAILED", "ABORTED") else None, "exception": None, "exc_info": None,
            "state": state, "time_started": started, "time_finished": finished, "credentials": None,
        })
    return records


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> str:
    """
    The engine a store-level test runs on.
    """
    param: str = request.param
    return param


@asynccontextmanager
async def opened_store(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest, prepare: Callable[[Any], None] = lambda pool: None
) -> AsyncIterator[SqlJobStore]:
    """
    A job store on C{engine} (SQLite under C{tmp_path}, or a fresh PostgreSQL
    database), set up with C{tmp_path} as its logs directory, stopped and
    closed after.  C{prepare} is given the writer's pool before the store is made.
    """
    if engine == "sqlite":
        path = str(tmp_path / "jobs.db")
        pool = open_database(path)
        prepare(pool)
        sqlite = SQLiteJobStore(pool, reactor, reader=open_database(path, reads_only=True))
        try:
            await sqlite.setup(tmp_path)
            yield sqlite
        finally:
            await sqlite.stop()
            await close_database(pool)
    else:
        db = PgDatabase(request.getfixturevalue("postgres_database"), reactor, size=3)
        await db.open()
        prepare(db)
        postgres = PgJobStore(db, reactor, node="n1")
        try:
            await postgres.setup(tmp_path)
            yield postgres
        finally:
            await postgres.stop()
            await db.close()


@pytest_twisted.async_yield_fixture
async def job_store(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[SqlJobStore]:
    async with opened_store(engine, tmp_path, request) as store:
        yield store


@pytest_twisted.ensureDeferred
async def test_store_queries_equal_filter_list(job_store: SqlJobStore) -> None:
    store = job_store
    records = synthetic(240)
    for record in records:
        store.record_created(record["id"], record)
    await store.record_finished(records[-1])
    # Memory holds fresher records of some jobs (they won over the stored ones).
    memory = [dict(records[i], progress={"percent": 100, "description": "fresh", "extra": None}, state="SUCCESS")
              for i in (4, 10, 100, 238)]
    fresh = {r["id"]: r for r in memory}
    union = [fresh.get(r["id"], r) for r in wire_json.loads(wire_json.dumps(records))]
    memory = wire_json.loads(wire_json.dumps(memory))
    queries: list[tuple[Any, Any]] = [
        ([], {}),
        ([["id", "=", 5]], {"get": True}),
        ([["id", "=", 6]], {}),
        ([["id", "in", [1, 5, 11, 101, 500]]], {}),
        ([["id", "nin", list(range(1, 200))]], {}),
        ([["id", ">=", 230]], {"order_by": ["-id"]}),
        ([["id", "<", 10.5]], {}),
        ([["id", "=", True]], {}),
        ([["method", "=", "sample.a"], ["state", "=", "SUCCESS"]], {"limit": 5}),
        ([["method", "=", "sample.a"], ["state", "=", "SUCCESS"]], {"order_by": ["-id"], "limit": 5, "offset": 2}),
        ([["method", "=", "sample.a"], ["state", "in", ["FAILED", "ABORTED"]]], {"count": True}),
        ([["method", "!=", "z.last"], ["state", "nin", ["SUCCESS"]]], {"order_by": ["method", "-state"], "limit": 9}),
        ([["method", ">", "sample.a"]], {"order_by": ["-method"], "limit": 7}),
        ([["state", "in", []]], {}),
        ([["state", "nin", []]], {"count": True}),
        ([["state", "=", "SUCCESS"]], {"order_by": ["-time_finished"], "limit": 6}),
        ([], {"order_by": ["time_finished"], "limit": 12}),
        ([], {"order_by": ["nulls_first:-time_finished"], "limit": 12}),
        ([], {"order_by": ["time_started", "id"], "offset": 30, "limit": 5}),
        ([["description", "^", "step 1"]], {"order_by": ["-id"], "limit": 4}),
        ([["description", "=", None]], {"count": True}),
        ([["progress.percent", ">", 90]], {"order_by": ["progress.percent"], "limit": 3}),
        ([["progress.description", "=", "fresh"]], {}),
        ([["OR", [["method", "=", "z.last"], ["result", "=", 3]]]], {"limit": 10, "order_by": ["-time_started"]}),
        ([["method", "C=", "SAMPLE.B"]], {"count": True}),
        ([["result", "in", [1, 2]], ["state", "=", "SUCCESS"]], {"select": ["id", "result"], "limit": 8}),
        ([["state", "=", "WAITING"]], {"get": True, "order_by": ["-time_started"]}),
        ([], {"offset": 235}),
        ([["abortable", "=", True]], {"order_by": ["-method", "time_started"], "limit": 15}),
    ]
    for filters, options in queries:
        answer = await query_jobs(memory, store, filters, options)
        assert answer == filter_list(union, filters, options), (filters, options)
    with pytest.raises(Exception) as error:
        await query_jobs(memory, store, [["id", "=", 9999]], {"get": True})
    assert "Object not found" in str(error.value)


def test_indexed_conditions_go_to_sql() -> None:
    opts = validate_options({"order_by": ["-id"], "limit": 3})
    sql = translate([["method", "=", "m"], ["state", "in", ["A", "B"]], ["id", ">", 5]], opts)
    assert sql.where == "WHERE method = ? AND state IN (?, ?) AND id > ?"
    assert sql.params == ("m", "A", "B", 5)
    assert sql.residual is None and sql.ordered
    assert sql.order == "ORDER BY id DESC NULLS LAST"
    # What SQL would answer differently stays in Python.
    for odd in (["id", "=", True], ["id", "=", None], ["method", "C=", "M"], ["method", "^", "m"], ["result", "=", 1]):
        sql = translate([odd], validate_options({}))
        assert sql.where == "" and sql.residual is not None, odd
    sql = translate([], validate_options({"order_by": ["progress.percent"]}))
    assert not sql.ordered and sql.order == "ORDER BY id ASC"


@pytest_twisted.ensureDeferred
async def test_a_sparse_record_is_cut_off_too(job_store: SqlJobStore) -> None:
    """
    A stored record that lacks fields (a restored backup may hold anything)
    is recorded ABORTED at start like any other, instead of stopping it.
    """
    (record,) = synthetic(1)
    record["state"] = "RUNNING"
    await job_store.record_created(record["id"], record)
    await job_store._pool.runOperation("UPDATE jobs SET record = ? WHERE id = ?", ('{"state": "RUNNING"}', record["id"]))
    assert await job_store.abort_unfinished(CUT_OFF) == 1
    (row,) = await job_store.query([], validate_options({}), ())
    assert (row["state"], row["error"]) == ("ABORTED", CUT_OFF)


@pytest_twisted.ensureDeferred
async def test_store_ids_and_cut_off_jobs(job_store: SqlJobStore, engine: str, tmp_path: Path) -> None:
    store = job_store
    assert await store.last_id() == 0
    records = synthetic(12)
    log = tmp_path / "5.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    records[4]["logs_path"] = str(log)
    for record in records:
        store.record_created(record["id"], record)
    await store.record_finished(records[-1])
    assert await store.last_id() == 12
    unfinished = [r["id"] for r in records if r["state"] in ("WAITING", "RUNNING")]
    assert await store.abort_unfinished(CUT_OFF) == len(unfinished)
    rows = await store.query([["id", "in", unfinished]], validate_options({}), ())
    assert [r["id"] for r in rows] == unfinished
    for row in rows:
        assert (row["state"], row["error"]) == ("ABORTED", CUT_OFF)
        assert row["time_finished"] is not None and row["exc_info"]["type"] == "JobAborted"
    cut = next(r for r in rows if r["id"] == 5)
    assert cut["logs_excerpt"].splitlines()[10] == "... 10 more lines ..."
    # Pruning everything keeps the highest id: it is never given again.
    await store.prune(time.time() + 1e9, 1)
    assert await store.query([], validate_options({"count": True}), ()) == 0
    if engine == "sqlite":
        assert await store.last_id() == 12
    # On PostgreSQL ids come from the sequence job_ids, not from the rows
    # written (tests/test_pg_ids.py): these were never given by it.


@pytest_twisted.ensureDeferred
async def test_unstorable_values_are_stored_as_their_repr(job_store: SqlJobStore) -> None:
    store = job_store
    record = synthetic(1)[0]
    record["arguments"] = [object, {"x": float("nan")}]
    await store.record_created(record["id"], record)
    [row] = await store.query([], validate_options({}), ())
    assert row["arguments"][0] == repr(object) and row["arguments"][1] == {"x": "nan"}


@pytest_twisted.ensureDeferred
async def test_store_deletes_finished_jobs_a_batch_per_statement(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """
    C{delete} runs one statement per L{DELETE_BATCH} ids, each in its own
    transaction on the writer's connection (so the jobs' writes go in
    between), and never deletes a waiting or running job.
    """
    transactions: list[int] = []

    def count_deletions(pool: Any) -> None:
        run = pool.runInteraction

        def counted(interaction: Any, *args: Any, **kwargs: Any) -> Any:
            if interaction.__name__ == "_delete_rows":
                transactions.append(len(args[0]))
            return run(interaction, *args, **kwargs)

        pool.runInteraction = counted

    async with opened_store(engine, tmp_path, request, count_deletions) as store:
        records = synthetic(2 * DELETE_BATCH + 100)
        for record in records:
            store.record_created(record["id"], record)
        await store.record_finished(records[0])
        ids = [r["id"] for r in records]
        finished = [r["id"] for r in records if r["state"] not in ("WAITING", "RUNNING")]
        assert await store.delete(ids) == len(finished)
        assert transactions == [DELETE_BATCH, DELETE_BATCH, 100]
        left = await store.query([], validate_options({}), ())
        assert {r["state"] for r in left} == {"WAITING", "RUNNING"}
        assert len(left) == len(ids) - len(finished)
        # The ids stay taken (on PostgreSQL by the sequence job_ids: tests/test_pg_ids.py).
        if engine == "sqlite":
            assert await store.last_id() == len(records)


# Retention.


@pytest.fixture
def few(settings: Settings) -> Settings:
    return attrs.evolve(settings, keep_records=4)


@pytest_twisted.ensureDeferred
async def test_retention_prunes_records_and_their_logs(few: Settings, restartable: list[RunningDaemon]) -> None:
    daemon = await start(few)
    restartable.append(daemon)
    client = await admin_of(daemon)
    running = await client.call("sample.exclusive", 60)
    for _ in range(6):
        await client.call_job("sample.logging_job", 2)
    ids = [j["id"] for j in await client.call("core.get_jobs", [["method", "=", "sample.logging_job"]])]
    logs = daemon.state_dir / "jobs"
    assert len(ids) == 6 and all((logs / f"{i}.log").exists() for i in ids)
    history = daemon.daemon.backends.history
    pruned = await history.prune()
    # 7 jobs for 4 places: the 3 oldest finished go, not the running one.
    assert pruned == ids[:3]
    rows = stored_rows(daemon.state_dir)
    assert sorted(rows) == [running, *ids[3:]]
    assert [i for i in ids if (logs / f"{i}.log").exists()] == ids[3:]
    # Past keep_days, every finished job goes.
    pruned = await history.prune(now=time.time() + 31 * 86400)
    assert pruned == ids[3:]
    assert list(stored_rows(daemon.state_dir)) == [running]
    assert list(logs.iterdir()) == []
    await client.close()


# Transient jobs and switching history off.


@pytest_twisted.ensureDeferred
async def test_transient_jobs_are_never_stored(settings: Settings, restartable: list[RunningDaemon]) -> None:
    daemon = await start(settings)
    restartable.append(daemon)
    client = await admin_of(daemon)
    assert await client.call("sample.transient_job") == 1
    marker = await client.call("core.job_test")
    await client.call_job("core.job_wait", marker)
    await client.close()
    await daemon.daemon.stopService()
    rows = stored_rows(daemon.state_dir)
    assert sorted(rows) == [2, 3] and {r["method"] for r in rows.values()} == {"core.job_test", "core.job_wait"}


@pytest.fixture
def memory_only(settings: Settings) -> Settings:
    return attrs.evolve(settings, job_history=False, keep_finished_jobs=2)


@pytest_twisted.ensureDeferred
async def test_history_off_keeps_jobs_in_memory_only(memory_only: Settings, restartable: list[RunningDaemon]) -> None:
    daemon = await start(memory_only)
    restartable.append(daemon)
    client = await admin_of(daemon)
    for _ in range(4):
        await client.call_job("core.job_test")
    assert [j["id"] for j in await client.call("core.get_jobs")] == [3, 4]
    await client.close()
    await daemon.daemon.stopService()
    with sqlite3.connect(daemon.state_dir / "midjobs.db") as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'jobs'").fetchall() == []
    again = await start(memory_only)
    restartable.append(again)
    client = await admin_of(again, create=False)
    assert await client.call("core.job_test") == 1
    await client.close()


# Batching, with a fake clock.


class Writes:
    """
    A batch's write function: each call's Deferred fired by the test.
    """

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.pending: list[Deferred[None]] = []

    def __call__(self, values: list[Any]) -> Deferred[None]:
        self.calls.append(values)
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d


def test_changes_wait_for_the_interval_and_coalesce() -> None:
    clock, writes = Clock(), Writes()
    batch = WriteBatch(clock, writes, interval=0.2)
    for i in range(100):
        assert batch.add(1, f"progress {i}", durable=False) is None
    batch.add(2, "other", durable=False)
    clock.advance(0.19)
    assert writes.calls == []
    clock.advance(0.01)
    assert writes.calls == [["progress 99", "other"]]


def test_durable_writes_go_at_once_and_group_while_one_is_in_flight() -> None:
    clock, writes = Clock(), Writes()
    batch = WriteBatch(clock, writes, interval=0.2)
    batch.add(9, "change", durable=False)
    first = batch.add(1, "created 1", durable=True)
    clock.advance(0)
    assert writes.calls == [["change", "created 1"]]
    # While that write is in flight, a burst of creations waits, then goes as one.
    fired: list[int] = []
    later = [batch.add(i, f"created {i}", durable=True) for i in range(2, 12)]
    for i, d in enumerate(later):
        d.addCallback(lambda _, i=i: fired.append(i))
    clock.advance(1)
    assert len(writes.calls) == 1 and not first.called
    writes.pending.pop(0).callback(None)
    assert first.called and writes.calls[1] == [f"created {i}" for i in range(2, 12)]
    assert fired == []
    writes.pending.pop(0).callback(None)
    assert fired == list(range(10))
    assert (batch.flushes, batch.written) == (2, 12)


def test_a_failed_write_fails_its_waiters_and_close_refuses_more() -> None:
    clock, writes = Clock(), Writes()
    batch = WriteBatch(clock, writes)
    d = batch.add(1, "created", durable=True)
    clock.advance(0)
    writes.pending.pop().errback(sqlite3.OperationalError("database or disk is full"))
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures[0].check(sqlite3.OperationalError)
    batch.add(2, "change", durable=False)
    closed = batch.close()
    assert writes.calls[-1] == ["change"] and not closed.called
    writes.pending.pop().callback(None)
    assert closed.called
    refused: list[Any] = []
    batch.add(3, "late", durable=True).addErrback(refused.append)
    assert refused[0].check(StoreClosed)
    assert batch.add(3, "late", durable=False) is None and len(writes.calls) == 2


def test_a_write_durable_at_once_flushes_the_next_on_the_next_turn() -> None:
    """
    A write function whose Deferred has already fired (an in-memory store)
    does not make the batch flush from within its own stack: a long run of
    jobs, each ending as the previous one is told, neither recurses nor stalls.
    """
    clock = Clock()
    written: list[list[Any]] = []

    def write(values: list[Any]) -> Deferred[None]:
        written.append(values)
        return succeed(None)

    batch = WriteBatch(clock, write)
    told: list[int] = []

    def next_job(_: object, i: int) -> None:
        told.append(i)
        if i < 5000:
            batch.add(i + 1, f"ended {i + 1}", durable=True).addCallback(next_job, i + 1)

    batch.add(0, "ended 0", durable=True).addCallback(next_job, 0)
    batch.add(9, "change", durable=False)
    for turn in range(5001):
        clock.advance(0)
    assert told == list(range(5001))
    assert written[0] == ["ended 0", "change"] and written[1] == ["ended 1"]
