"""
Clearing the job history (issue 15): C{core.job_delete(id)} and
C{core.jobs_prune(filters)}, for full administrators.  A deleted job is gone
from memory, from the database (also after a restart) and from the logs
directory, and C{core.get_jobs} subscribers hear C{removed}; waiting and
running jobs are never deleted.

Daemons run in this process on 127.0.0.1 (restarted on the same state
directory where a test needs it); the clients are real.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, AsyncIterator

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from conftest import RunningDaemon
from gated_services import Gates
from midjobs.client import ClientCallError, connect
from midjobs.config import Settings
from midjobs.plugins import job_deletion
from test_history import admin_of, start, stored_rows


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, plugins=(*settings.plugins, "gated_services"))


@pytest_twisted.async_yield_fixture
async def restartable(settings: Settings) -> AsyncIterator[list[RunningDaemon]]:
    daemons: list[RunningDaemon] = []
    yield daemons
    for daemon in daemons:
        if daemon.daemon.running:
            await daemon.daemon.stopService()


def gates_of(daemon: RunningDaemon) -> Gates:
    return daemon.middleware.services["gated"].gates


class Removals:
    """
    The C{removed} events of C{core.get_jobs} a client got.
    """

    def __init__(self) -> None:
        self.removed: list[tuple[int, dict[str, Any]]] = []
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def __call__(self, msg: str, collection: str, id: int, fields: dict[str, Any]) -> None:
        if msg != "removed":
            return
        self.removed.append((id, fields))
        for waiter in [w for w in self._waiting if w[0] <= len(self.removed)]:
            self._waiting.remove(waiter)
            waiter[1].callback(None)

    def count(self, n: int) -> Deferred[None]:
        """
        Fires once C{n} removals were heard.
        """
        d: Deferred[None] = Deferred()
        if len(self.removed) >= n:
            d.callback(None)
        else:
            self._waiting.append((n, d))
        return d.addTimeout(10, reactor)

    def ids(self) -> list[int]:
        return [job_id for job_id, _ in self.removed]


async def listed(client: Any, *filters: Any) -> list[int]:
    return [job["id"] for job in await client.call("core.get_jobs", list(filters))]


async def refused(call: Deferred[Any], code: int) -> ClientCallError:
    with pytest.raises(ClientCallError) as info:
        await call
    assert info.value.errno == code, info.value
    return info.value


async def user(daemon: RunningDaemon, admin: Any, username: str, roles: list[str]) -> Any:
    password = f"{username}-pass-123"
    await admin.call("user.create", {"username": username, "password": password, "roles": roles})
    client = await connect(daemon.ws_url, reactor=reactor)
    assert await client.login(username, password)
    return client


@pytest_twisted.ensureDeferred
async def test_a_deleted_job_is_gone_and_stays_gone(settings: Settings, restartable: list[RunningDaemon]) -> None:
    daemon = await start(settings)
    restartable.append(daemon)
    admin = await admin_of(daemon)
    logs = daemon.state_dir / "jobs"
    kept = await admin.call("sample.logging_job", 3)
    doomed = await admin.call("sample.logging_job", 5)
    for job_id in (kept, doomed):
        await admin.call_job("core.job_wait", job_id)
    assert (logs / f"{doomed}.log").exists()
    watcher = await connect(daemon.ws_url, reactor=reactor)
    assert await watcher.login("admin", "s3cret-pass")
    removals = Removals()
    await watcher.subscribe("core.get_jobs", removals)

    assert await admin.call("core.job_delete", doomed) is None
    await removals.count(1)
    assert removals.ids() == [doomed]
    assert removals.removed[0][1]["method"] == "sample.logging_job"
    assert doomed not in await listed(admin)
    assert kept in await listed(admin)
    await refused(admin.call("core.get_jobs", [["id", "=", doomed]], {"get": True}), errno.ENOENT)
    assert doomed not in stored_rows(daemon.state_dir)
    assert not (logs / f"{doomed}.log").exists() and (logs / f"{kept}.log").exists()
    # Its logs are gone for downloads too, and deleting it again says there is no such job.
    await refused(admin.call("core.job_download_logs", doomed, "x.log"), errno.ENOENT)
    await refused(admin.call("core.job_delete", doomed), errno.ENOENT)
    await watcher.close()
    await admin.close()
    await daemon.daemon.stopService()

    again = await start(settings)
    restartable.append(again)
    admin = await admin_of(again, create=False)
    jobs = await listed(admin)
    assert doomed not in jobs and kept in jobs
    # Ids go on above the highest ever given, whichever was deleted.
    assert await admin.call("core.job_test") > doomed
    await admin.close()


@pytest_twisted.ensureDeferred
async def test_waiting_and_running_jobs_are_refused(daemon: RunningDaemon, admin_client: Any) -> None:
    gates = gates_of(daemon)
    running = await admin_client.call("core.bulk", "gated.hold", [["r"]])
    await gates.started_one("r")
    [held] = await listed(admin_client, ["method", "=", "gated.hold"])
    waiting = await admin_client.call("core.bulk", "gated.hold", [["w"]])
    for job_id, state in ((running, "RUNNING"), (held, "RUNNING"), (waiting, "WAITING")):
        error = await refused(admin_client.call("core.job_delete", job_id), errno.EBUSY)
        assert f"Job {job_id} is {state}" in error.errmsg and "ended" in error.errmsg
    # A prune skips them and says how many it skipped.
    result = await admin_client.call("core.jobs_prune", [["method", "in", ["core.bulk", "gated.hold"]]])
    assert result == {"deleted": 0, "skipped": 3}
    assert set(await listed(admin_client)) >= {running, held, waiting}
    await admin_client.call("gated.release", "r")
    await gates.started_one("w")
    await admin_client.call("gated.release", "w")
    await admin_client.call_job("core.job_wait", waiting)
    assert await admin_client.call("core.job_delete", running) is None
    assert await admin_client.call("core.jobs_prune", [["method", "=", "gated.hold"]]) == {"deleted": 2, "skipped": 0}


@pytest_twisted.ensureDeferred
async def test_only_full_administrators_delete(daemon: RunningDaemon, admin_client: Any) -> None:
    reader = await user(daemon, admin_client, "reader", ["READONLY_ADMIN"])
    owner = await user(daemon, admin_client, "owner", [])
    try:
        own = await owner.call("gated.hold", "own")
        await gates_of(daemon).started_one("own")
        await owner.call("gated.release", "own")
        await owner.call_job("core.job_wait", own)
        for client in (reader, owner):
            await refused(client.call("core.job_delete", own), errno.EACCES)
            await refused(client.call("core.jobs_prune", []), errno.EACCES)
        assert own in await listed(admin_client)
        assert (daemon.state_dir / "jobs" / f"{own}.log").exists()
    finally:
        await reader.close()
        await owner.close()


@pytest_twisted.ensureDeferred
async def test_prune_takes_get_jobs_filters(daemon: RunningDaemon, admin_client: Any, monkeypatch: Any) -> None:
    """
    C{jobs_prune} deletes what C{core.get_jobs} with the same filters lists
    (those that have ended), a batch at a time, and returns how many.
    """
    for i in range(5):
        with pytest.raises(ClientCallError):
            await admin_client.call_job("sample.failing_job", f"broke {i}")
    failed = await listed(admin_client, ["method", "=", "sample.failing_job"])
    logged = [await admin_client.call("sample.logging_job", 2) for _ in range(2)]
    for job_id in logged:
        await admin_client.call_job("core.job_wait", job_id)
    removals = Removals()
    await admin_client.subscribe("core.get_jobs", removals)
    # Bad filters are refused before anything is deleted.
    await refused(admin_client.call("core.jobs_prune", [["state", "~", "("]]), errno.EINVAL)
    await refused(admin_client.call("core.jobs_prune", [["nope"]]), errno.EINVAL)
    before = await listed(admin_client)

    monkeypatch.setattr(job_deletion, "BATCH", 2)
    batches: list[list[int]] = []
    store = daemon.middleware.job_store
    delete = store.delete
    monkeypatch.setattr(store, "delete", lambda ids: batches.append(list(ids)) or delete(ids))
    filters = [["OR", [["error", "~", "broke [0-3]"], ["method", "=", "sample.logging_job"]]]]
    matched = await listed(admin_client, *filters)
    assert matched == [*failed[:4], *logged]
    assert await admin_client.call("core.jobs_prune", filters) == {"deleted": 6, "skipped": 0}
    assert batches == [matched[0:2], matched[2:4], matched[4:6]]
    await removals.count(6)
    assert sorted(removals.ids()) == matched
    assert await listed(admin_client) == [j for j in before if j not in matched]
    assert not set(matched) & set(stored_rows(daemon.state_dir))
    assert not any((daemon.state_dir / "jobs" / f"{job_id}.log").exists() for job_id in logged)
    # Nothing left to match: nothing deleted.
    assert await admin_client.call("core.jobs_prune", filters) == {"deleted": 0, "skipped": 0}


@pytest_twisted.ensureDeferred
async def test_history_off_deletes_from_memory(settings: Settings, restartable: list[RunningDaemon]) -> None:
    daemon = await start(attrs.evolve(settings, job_history=False))
    restartable.append(daemon)
    admin = await admin_of(daemon)
    done = [await admin.call_job("core.job_test") for _ in range(3)]
    ids = await listed(admin, ["method", "=", "core.job_test"])
    assert len(done) == len(ids) == 3
    assert await admin.call("core.job_delete", ids[0]) is None
    assert await admin.call("core.jobs_prune", [["method", "=", "core.job_test"]]) == {"deleted": 2, "skipped": 0}
    assert await listed(admin, ["method", "=", "core.job_test"]) == []
    await admin.close()


def test_the_log_file_comes_from_the_id(tmp_path: Path) -> None:
    from midjobs.log_files import remove_log_files

    (tmp_path / "3.log").write_text("x")
    (tmp_path / "4.log").write_text("x")
    assert remove_log_files(tmp_path, [3, 5]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["4.log"]
    with pytest.raises(ValueError):
        remove_log_files(tmp_path, [0])
