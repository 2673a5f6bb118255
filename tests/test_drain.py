"""
SIGTERM drains: a real C{twistd -n midjobs} stops taking connections and
jobs, lets its running jobs end for up to C{[jobs] drain_timeout}, aborts and
records the rest, and ends as a clean stop.  The tests wait on the daemon's
notifications (a fake C{NOTIFY_SOCKET}), job events and its exit, never on
sleeps.
"""

from __future__ import annotations

import errno
import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.error import ConnectError
from twisted.web.client import HTTPConnectionPool

from midjobs.client import ClientCallError, connect
from midjobs.drain import STOPPED, STOPPING

from test_history import LastRecords
from test_systemd_notify import NotifyReceiver, notify_receiver, processes  # noqa: F401 (fixtures)
from test_twistd import Twistd, twistd

FINAL = ("SUCCESS", "FAILED", "ABORTED")


def start(tmp_path: Path, short_tmp: Path, drain_timeout: int, notify: str | None = None) -> Twistd:
    config = tmp_path / "midjobs.toml"
    config.write_text(f"[jobs]\ndrain_timeout = {drain_timeout}\n")
    return twistd(
        "--config", str(config),
        "--state-dir", str(tmp_path / "state"),
        "--listen", "tcp:0:interface=127.0.0.1",
        "--socket", str(short_tmp / "s.sock"),
        "--plugin", "test_drain_services",
        path=tmp_path,
        env={"NOTIFY_SOCKET": notify} if notify else None,
    )  # fmt: skip


async def local_client(short_tmp: Path) -> Any:
    return await connect(f"ws+unix://{short_tmp / 's.sock'}", reactor=reactor, call_timeout=30)


def stored(tmp_path: Path, job_id: int) -> dict[str, Any]:
    """
    The record of job C{job_id} as the stopped daemon left it in its database.
    """
    with sqlite3.connect(tmp_path / "state" / "midjobs.db") as db:
        (text,) = db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return json.loads(text)


def ended(process: Twistd, receiver: NotifyReceiver) -> Any:
    process.ended.addCallback(receiver.sender_ended, process)
    return process.ended


@pytest_twisted.ensureDeferred
async def test_sigterm_lets_running_jobs_finish(
    tmp_path: Path, short_tmp: Path, notify_receiver: Any, processes: list[Any]
) -> None:
    receiver, notify = notify_receiver
    process = start(tmp_path, short_tmp, 30, notify)
    processes.append(process)
    port = await process.ready
    exit_code = ended(process, receiver)
    client = await local_client(short_tmp)
    told = LastRecords()
    await client.subscribe("core.get_jobs", told)
    running = await client.call("drain_test.hold", "a")
    locked = await client.call("drain_test.hold_locked", "b")
    waiting = await client.call("drain_test.hold_locked", "c")
    for job_id in (running, locked):
        await told.wait_for(lambda f, i=job_id: f["id"] == i and f["progress"]["description"] == "held")
    # A connection opened before the stop stays usable during the drain.
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 1
    health = f"http://127.0.0.1:{port}/_health"
    response = await treq.get(health, pool=pool)
    assert (response.code, await treq.content(response)) == (200, b"ok\n")

    process.transport.signalProcess(signal.SIGTERM)
    stopping = await receiver.wait_for(receiver.sent("STOPPING"))
    assert stopping == {"STOPPING": "1", "STATUS": "Draining: 2 jobs running, 30 s left"}
    # The job waiting for the lock had not started: aborted at once.
    await told.wait_for(lambda f: f["id"] == waiting and f["state"] in FINAL)
    assert (told.records[waiting]["state"], told.records[waiting]["error"]) == ("ABORTED", STOPPING)

    # No new jobs, a clear error; the drain shows.
    with pytest.raises(ClientCallError) as refused:
        await client.call("drain_test.hold", "late")
    assert (refused.value.errno, refused.value.reason) == (errno.ESHUTDOWN, STOPPING)
    status = await client.call("system.shutdown_status")
    assert status["phase"] == "DRAINING" and status["jobs_left"] == 2 and 0 < status["seconds_left"] <= 30
    response = await treq.get(health, pool=pool)
    assert (response.code, await treq.content(response)) == (503, b"unavailable\n")
    # No new connections.
    with pytest.raises(ConnectError):
        await treq.get(health, pool=HTTPConnectionPool(reactor, persistent=False))

    assert await client.call("drain_test.release", "a") is True
    await told.wait_for(lambda f: f["id"] == running and f["state"] == "SUCCESS")
    assert not exit_code.called  # the other one still runs
    assert await client.call("drain_test.release", "b") is True
    assert await exit_code == -signal.SIGTERM
    await pool.closeCachedConnections()
    assert b"Traceback" not in process.output and b"Unhandled" not in process.output

    # After a restart, as the jobs ended.
    process = start(tmp_path, short_tmp, 30)
    processes.append(process)
    await process.ready
    client = await local_client(short_tmp)
    jobs = {job["id"]: job for job in await client.call("core.get_jobs")}
    await client.close()
    assert [(jobs[i]["state"], jobs[i]["result"]) for i in (running, locked)] == [("SUCCESS", "a"), ("SUCCESS", "b")]
    assert (jobs[waiting]["state"], jobs[waiting]["error"]) == ("ABORTED", STOPPING)
    process.transport.signalProcess(signal.SIGTERM)
    assert await process.ended == -signal.SIGTERM


async def holding_forever(
    tmp_path: Path, short_tmp: Path, drain: int, notify_receiver: Any, processes: list[Any]
) -> tuple[Any, LastRecords, int]:
    """
    A daemon draining for C{drain} seconds, with a job that holds on until
    it is aborted, running; its events as the local client sees them.
    """
    _, notify = notify_receiver
    process = start(tmp_path, short_tmp, drain, notify)
    processes.append(process)
    await process.ready
    client = await local_client(short_tmp)
    told = LastRecords()
    await client.subscribe("core.get_jobs", told)
    job_id = await client.call("drain_test.hold", "forever")
    await told.wait_for(lambda f: f["id"] == job_id and f["progress"]["description"] == "held")
    return process, told, job_id


@pytest_twisted.ensureDeferred
async def test_a_job_that_outlasts_the_drain_is_aborted_and_recorded(
    tmp_path: Path, short_tmp: Path, notify_receiver: Any, processes: list[Any]
) -> None:
    receiver, _ = notify_receiver
    process, told, job_id = await holding_forever(tmp_path, short_tmp, 1, notify_receiver, processes)
    process.transport.signalProcess(signal.SIGTERM)
    assert await ended(process, receiver) == -signal.SIGTERM
    record = stored(tmp_path, job_id)
    assert (record["state"], record["error"], record["exc_info"]["type"]) == ("ABORTED", STOPPED, "JobAborted")
    # The client saw it end so before the daemon went.
    assert (told.records[job_id]["state"], told.records[job_id]["error"]) == ("ABORTED", STOPPED)
    assert b"Aborting 1 job(s) still running: The daemon was stopped" in process.output


@pytest_twisted.ensureDeferred
async def test_a_second_sigterm_stops_at_once(
    tmp_path: Path, short_tmp: Path, notify_receiver: Any, processes: list[Any]
) -> None:
    receiver, _ = notify_receiver
    process, told, job_id = await holding_forever(tmp_path, short_tmp, 3600, notify_receiver, processes)
    process.transport.signalProcess(signal.SIGTERM)
    await receiver.wait_for(receiver.sent("STOPPING"))
    process.transport.signalProcess(signal.SIGTERM)
    # Not the hour of the drain: the test's timeout would fail it.
    code = await ended(process, receiver).addTimeout(20, reactor)
    assert code == -signal.SIGTERM
    record = stored(tmp_path, job_id)
    assert (record["state"], record["error"]) == ("ABORTED", STOPPED)
    assert b"SIGTERM while stopping: 1 job(s) aborted at once" in process.output
    assert b"Traceback" not in process.output and b"Unhandled" not in process.output


# In one process: what a drain refuses and what it lets through.


@pytest_twisted.ensureDeferred
async def test_during_a_drain_clients_follow_their_jobs(daemon: Any, admin_client: Any) -> None:
    job_id = await admin_client.call("core.job_test", {"sleep": 0.2})
    drain = daemon.middleware.drain
    ended = drain.begin(5)
    try:
        # Waiting for a job is no new work, and other methods answer.
        assert await admin_client.call_job("core.job_wait", job_id) is True
        assert await admin_client.call("core.ping") == "pong"
        with pytest.raises(ClientCallError) as refused:
            await admin_client.call("core.job_test")
        assert refused.value.errno == errno.ESHUTDOWN
        await ended
        assert drain.status() == {"phase": "DRAINING", "jobs_left": 0, "seconds_left": 5}
    finally:
        drain.finish()


@pytest_twisted.ensureDeferred
async def test_an_upload_during_a_drain_is_503(daemon: Any) -> None:
    from test_upload import END, data_part, part, raw_upload

    await daemon.middleware.users.create({"username": "admin", "password": "s3cret-pass", "roles": ["FULL_ADMIN"]})
    daemon.middleware.drain.begin(5)
    try:
        body = data_part("core.job_test") + part("file", b"x" * 10, filename="x") + END
        status, _, payload = await raw_upload(daemon, body)
        assert payload == {"error": STOPPING}
        assert status == 503
    finally:
        daemon.middleware.drain.finish()
