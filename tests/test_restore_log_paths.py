"""
A restored backup cannot point a job's log at another file (issue 11,
finding 10): the log of job C{id} is always C{<state>/jobs/<id>.log}, never a
path read from the database.

The attack end to end: C{config.save}, a tampered database in the backup,
C{config.upload} (curl), a restart; then C{logs_excerpt},
C{core.job_download_logs} and C{core.get_jobs} are asked about the jobs.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from midjobs.client import ClientCallError, download
from midjobs.config import Settings
from midjobs.log_files import log_file
from midjobs.store.backup import DATABASE_NAME
from test_config_backup import members, save, tar_of, upload
from test_history import admin_of, restartable, start  # noqa: F401 (restartable is a fixture)

SECRET = "TOP-SECRET line of a file no job wrote\n"


def tampered(backup: bytes, tmp_path: Path, target: Path, logged: int) -> bytes:
    """
    C{backup} with a database whose job C{logged} (finished, with a log) and
    a new job 50 (RUNNING when the backup was made, with a log) have their
    log at C{target}, in the column and in the record alike.
    """
    path = tmp_path / "tampered.db"
    path.write_bytes(members(backup)[DATABASE_NAME])
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        (text,) = db.execute("SELECT record FROM jobs WHERE id = ?", (logged,)).fetchone()
        record = json.loads(text)
        record["logs_path"] = str(target)
        db.execute("UPDATE jobs SET logs_path = ?, record = ? WHERE id = ?", (str(target), json.dumps(record), logged))
        running = dict(record, id=50, state="RUNNING", time_finished=None, logs_excerpt=None, result=None)
        db.execute(
            "INSERT INTO jobs (id, method, state, time_started, time_finished, logs_path, record) "
            "VALUES (50, ?, 'RUNNING', NULL, NULL, ?, ?)",
            (running["method"], str(target), json.dumps(running)),
        )
    return tar_of((DATABASE_NAME, path.read_bytes()))


@pytest_twisted.ensureDeferred
async def test_a_restored_log_path_is_never_read(
    settings: Settings, restartable: list[Any], tmp_path: Path  # noqa: F811
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET * 3)
    first = await start(settings)
    restartable.append(first)
    client = await admin_of(first)
    logged = await client.call("sample.logging_job", 3)
    assert await client.call_job("core.job_wait", logged) == 3
    _, backup = await save(first, client)
    job = await upload(first, tampered(backup, tmp_path, secret, logged), tmp_path)
    assert job.error is None, job.error
    await client.close()
    await first.daemon.stopService()

    second = await start(settings)
    restartable.append(second)
    client = await admin_of(second, create=False)
    logs_dir = second.state_dir / "jobs"
    jobs = {j["id"]: j for j in await client.call("core.get_jobs", [["id", "in", [logged, 50]]])}
    # Both show the path their id gives, whatever the database said.
    assert jobs[logged]["logs_path"] == str(log_file(logs_dir, logged))
    assert jobs[50]["logs_path"] == str(log_file(logs_dir, 50))
    # Job 50 was cut off by the restart: its excerpt is from its own log (there is none), not the secret.
    assert jobs[50]["state"] == "ABORTED"
    assert "TOP-SECRET" not in repr(jobs)
    assert await client.call("core.get_jobs", [["logs_path", "=", str(secret)]]) == []
    # The download serves the job's own log.
    url = await client.call("core.job_download_logs", logged, "job.log")
    copy = io.BytesIO()
    await download(second.http_url, url, copy, reactor=reactor)
    assert copy.getvalue() == log_file(logs_dir, logged).read_bytes()
    assert b"TOP-SECRET" not in copy.getvalue()
    # Job 50 never wrote a log here: there is nothing to download.
    with pytest.raises(ClientCallError) as info:
        await client.call("core.job_download_logs", 50, "job.log")
    assert info.value.errno == errno.ENOENT
    await client.close()


def test_log_file_is_the_id_in_the_directory(tmp_path: Path) -> None:
    assert log_file(tmp_path, 12) == tmp_path / "12.log"
    for bad in (0, -1, True, "1", "../x", 1.0):
        with pytest.raises(ValueError):
            log_file(tmp_path, bad)  # type: ignore[arg-type]
