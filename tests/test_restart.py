"""
Faults: C{twistd -n midjobs} killed with SIGKILL and restarted on the same state
directory, and a state directory it cannot write.

Every job a client was told about (an id in a response, an event) must be there
after the restart with a true final state: SUCCESS with its result and logs if
that was told, else ABORTED because the daemon stopped.  Nothing sleeps to
synchronise: the tests wait for the daemon's output, for events and answers.
"""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue

from midjobs.client import Client, connect
from midjobs.store import CUT_OFF

from test_history import LastRecords
from test_twistd import Twistd, twistd

FINAL = ("SUCCESS", "FAILED", "ABORTED")


def start(state_dir: Path, socket: Path, cwd: Path) -> Twistd:
    return twistd(
        "--state-dir", str(state_dir),
        "--listen", "tcp:0:interface=127.0.0.1",
        "--socket", str(socket),
        "--plugin", "sample_services",
        path=cwd,
    )  # fmt: skip


async def local_client(socket: Path) -> Client:
    """
    A client over the UNIX socket, where this process's uid is an administrator.
    """
    return await connect(f"ws+unix://{socket}", reactor=reactor, call_timeout=30)


async def kill(process: Twistd) -> None:
    process.transport.signalProcess("KILL")
    assert await process.ended == -signal.SIGKILL


async def stop(process: Twistd) -> None:
    process.transport.signalProcess("TERM")
    assert await process.ended == -signal.SIGTERM


def integrity(state_dir: Path) -> str:
    with sqlite3.connect(state_dir / "midjobs.db") as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


async def all_jobs(socket: Path) -> dict[int, dict[str, Any]]:
    client = await local_client(socket)
    try:
        return {job["id"]: job for job in await client.call("core.get_jobs")}
    finally:
        await client.close()


def assert_cut_off(job: dict[str, Any]) -> None:
    assert (job["state"], job["error"]) == ("ABORTED", CUT_OFF), job
    assert job["time_finished"] is not None and job["time_finished"] >= job["time_started"]
    assert job["exc_info"]["type"] == "JobAborted"


@pytest_twisted.ensureDeferred
async def test_killed_during_running_jobs(tmp_path: Path, short_tmp: Path) -> None:
    state, socket = tmp_path / "state", short_tmp / "s.sock"
    process = start(state, socket, tmp_path)
    await process.ready
    client = await local_client(socket)
    told = LastRecords()
    await client.subscribe("core.get_jobs", told)

    def ended(job_id: int) -> Deferred[None]:
        return told.wait_for(lambda f: f["id"] == job_id and f["state"] in FINAL)

    finished = [
        await client.call("sample.logging_job", 40),
        await client.call("core.job_test", {"description": "quick"}),
        await client.call("sample.failing_job", "it failed"),
        await client.call("sample.thread_job", 2),
    ]
    for job_id in finished:
        await ended(job_id)
    running = [
        await client.call("core.job_test", {"sleep": 60, "lock": "L"}),
        await client.call("sample.thread_wait_abort"),
    ]
    waiting = await client.call("core.job_test", {"sleep": 60, "lock": "L"})
    await told.wait_for(lambda f: f["id"] == running[0] and f["state"] == "RUNNING")
    await told.wait_for(lambda f: f["id"] == running[1] and f["progress"]["description"] == "waiting")
    assert told.records[waiting]["state"] == "WAITING"
    logs = Path(told.records[finished[0]]["logs_path"])
    log_text = logs.read_text()
    assert log_text.splitlines()[-1] == "line 39"

    await kill(process)
    assert integrity(state) == "ok"

    process = start(state, socket, tmp_path)
    await process.ready
    jobs = await all_jobs(socket)
    assert set(told.records) <= set(jobs)
    for job_id in finished:
        assert jobs[job_id] == told.records[job_id]  # result, error, logs excerpt: all of it
    assert [jobs[i]["state"] for i in finished] == ["SUCCESS", "SUCCESS", "FAILED", "SUCCESS"]
    assert jobs[finished[3]]["result"] == "done"
    for job_id in [*running, waiting]:
        assert_cut_off(jobs[job_id])
    assert logs.read_text() == log_text
    # The restarted daemon goes on numbering after the jobs it had.
    client = await local_client(socket)
    assert await client.call("core.job_test") == max(jobs) + 1
    await client.close()
    await stop(process)
    assert integrity(state) == "ok"


class Burst:
    """
    One client calling job methods back to back, C{width} calls in flight, until the connection ends.
    """

    def __init__(self, client: Client, calls: Any, width: int, answered: Callable[[Any], None]) -> None:
        self.client = client
        self.calls = calls
        self.answered = answered
        self.results: list[Any] = []
        self.lost = 0
        for _ in range(width):
            self._next()

    def _next(self) -> None:
        if not self.client.connected:
            return
        method, params = next(self.calls)
        self.client.call(method, params).addCallbacks(self._answer, self._lose)

    def _answer(self, result: Any) -> None:
        self.results.append(result)
        self.answered(result)
        self._next()

    def _lose(self, failure: Any) -> None:
        self.lost += 1


@pytest_twisted.ensureDeferred
async def test_killed_during_a_burst_of_job_creation(tmp_path: Path, short_tmp: Path) -> None:
    state, socket = tmp_path / "state", short_tmp / "s.sock"
    process = start(state, socket, tmp_path)
    await process.ready
    watcher = await local_client(socket)
    told = LastRecords()
    await watcher.subscribe("core.get_jobs", told)
    legacy = [await local_client(socket) for _ in range(3)]
    new_style = await local_client(socket)
    await new_style.call("core.set_options", {"legacy_jobs": False})

    answers = 0
    enough: Deferred[None] = Deferred()

    def answered(result: Any) -> None:
        nonlocal answers
        answers += 1
        if answers == 150 and not enough.called:
            # Killed while the calls are still coming.
            process.transport.signalProcess("KILL")
            enough.callback(None)

    mix = [("core.job_test", {}), ("core.job_test", {"sleep": 60}), ("sample.logging_job", 5)]
    bursts = [Burst(client, itertools.cycle(mix), 8, answered) for client in legacy]
    quick = Burst(new_style, itertools.repeat(("core.job_test", {})), 8, answered)
    await enough
    assert await process.ended == -signal.SIGKILL
    assert integrity(state) == "ok"

    given = {job_id for burst in bursts for job_id in burst.results}
    succeeded = {id for id, f in told.records.items() if f["state"] == "SUCCESS"}
    assert given and succeeded and quick.results and all(r is True for r in quick.results)

    process = start(state, socket, tmp_path)
    await process.ready
    jobs = await all_jobs(socket)
    assert given | set(told.records) <= set(jobs)
    for job_id, job in jobs.items():
        if job_id in succeeded or job["state"] == "SUCCESS":
            assert job["state"] == "SUCCESS" and job["result"] in (True, 5), job
        else:
            assert_cut_off(job)
        if job["method"] == "sample.logging_job" and job["state"] == "SUCCESS":
            lines = [f"line {i}" for i in range(5)]
            assert Path(job["logs_path"]).read_text().splitlines() == lines
            assert job["logs_excerpt"] == "".join(f"{line}\n" for line in lines)
    for job_id in succeeded:
        assert jobs[job_id] == told.records[job_id]
    # Each new-style answer was the end of a job that is SUCCESS.
    quick_jobs = [j for j in jobs.values() if j["method"] == "core.job_test" and j["arguments"] == [{}]]
    assert sum(1 for j in quick_jobs if j["state"] == "SUCCESS") >= len(quick.results)
    await stop(process)
    assert integrity(state) == "ok"


# A state directory the daemon cannot use.


async def mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    out, err, code = await getProcessOutputAndValue(
        "/bin/mount", ["-t", "tmpfs", "-o", options, "tmpfs", str(where)], env=os.environ
    )
    if code != 0:
        pytest.skip(f"cannot mount a tmpfs here: {err.decode().strip()}")


async def umount(where: Path) -> None:
    await getProcessOutputAndValue("/bin/umount", [str(where)], env=os.environ)


async def refused(state: Path, socket: Path, cwd: Path) -> str:
    process = start(state, socket, cwd)
    process.ready.addErrback(lambda failure: None)
    code = await process.ended
    output = process.output.decode()
    assert code == 1, output
    assert "Traceback" not in output
    return output


@pytest.mark.parametrize("below", [False, True])
@pytest_twisted.ensureDeferred
async def test_unwritable_state_directory(tmp_path: Path, short_tmp: Path, below: bool) -> None:
    readonly = tmp_path / "readonly"
    if os.geteuid() == 0:
        await mount_tmpfs(readonly, "ro,size=64k")
    else:
        readonly.mkdir()
        readonly.chmod(0o500)
    try:
        state = readonly / "state" if below else readonly
        output = await refused(state, short_tmp / "s.sock", tmp_path)
    finally:
        if os.geteuid() == 0:
            await umount(readonly)
        else:
            readonly.chmod(0o700)
    if below:
        reason = f"cannot use the state directory {state}: "
    else:
        reason = f"cannot use the database {state / 'midjobs.db'}: unable to open database file"
    [line] = [line for line in output.splitlines() if "could not start" in line]
    assert line.endswith(f"midjobs could not start: {reason}") or f"could not start: {reason}" in line


@pytest_twisted.ensureDeferred
async def test_full_disk(tmp_path: Path, short_tmp: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("filling a disk needs a tmpfs of its own, which needs root")
    disk = tmp_path / "disk"
    await mount_tmpfs(disk, "size=256k")
    try:
        (disk / "state").mkdir()
        with open(disk / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError:
                pass
        output = await refused(disk / "state", short_tmp / "s.sock", tmp_path)
    finally:
        await umount(disk)
    [line] = [line for line in output.splitlines() if "could not start" in line]
    assert line.endswith(f"midjobs could not start: cannot use the database {disk / 'state' / 'midjobs.db'}: database or disk is full")
