"""
A job history written straight into a daemon's state directory before it
starts, through the SQLite job store itself: for the job list's browser
tests (C{test_webui_list.py}) and C{bench/webui.py}, which want thousands of
past jobs in seconds.

    python tests/webui_list_history.py STATE_DIR COUNT [NOW]

writes jobs 1..COUNT (see L{record}) and exits.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: The methods, users and states of the written jobs, in turn (see L{record}).
METHODS = [
    "backup.run",
    "pool.scrub",
    "replication.run",
    "cloudsync.sync",
    "update.download",
]
USERS = ["admin", "alice", "bob"]
#: Of every 20 jobs: 17 succeed, 2 fail, 1 is aborted.
STATES = ["SUCCESS"] * 17 + ["FAILED"] * 2 + ["ABORTED"]
#: The jobs are spread over this many days before C{now}, the newest last.
SPREAD_DAYS = 20


def record(job_id: int, count: int, now: float) -> dict[str, Any]:
    """
    Job C{job_id} of C{count}: method, user and state in turn; started at even
    steps over L{SPREAD_DAYS} days before C{now}, so that ids and start times
    go in the same order; three seconds long.
    """
    utc = datetime.UTC
    state = STATES[job_id % len(STATES)]
    step = SPREAD_DAYS * 86400 / max(count, 1)
    started = datetime.datetime.fromtimestamp(
        now - SPREAD_DAYS * 86400 + job_id * step, utc
    )
    user = USERS[job_id % len(USERS)]
    return {
        "id": job_id,
        "message_ids": [],
        "method": METHODS[job_id % len(METHODS)],
        "arguments": [f"tank/dataset{job_id % 50}", {"recursive": bool(job_id % 2)}],
        "transient": False,
        "description": f"Past job {job_id}",
        "abortable": True,
        "logs_path": None,
        "logs_excerpt": None,
        "progress": {"percent": 100, "description": "done", "extra": None},
        "result": {"done": job_id} if state == "SUCCESS" else None,
        "result_encoding_error": None,
        "error": f"[EFAULT] disk {job_id % 7} broke"
        if state == "FAILED"
        else ("Job aborted" if state == "ABORTED" else None),
        "exception": "Traceback (most recent call last):\n  ...\nCallError: it broke\n"
        if state == "FAILED"
        else None,
        "exc_info": {
            "type": "CallError",
            "errno": 14,
            "extra": None,
            "repr": "CallError()",
        }
        if state == "FAILED"
        else None,
        "state": state,
        "time_started": started,
        "time_finished": started + datetime.timedelta(seconds=3),
        "credentials": {"type": "LOGIN_PASSWORD", "data": {"username": user}},
    }


async def _fill(reactor: Any, state_dir: str, count: int, now: float) -> None:
    from midjobs.store import SQLiteJobStore, close_database, open_database

    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    pool = open_database(os.path.join(state_dir, "midjobs.db"), reactor=reactor)
    store = SQLiteJobStore(pool, reactor)
    try:
        await store.setup()
        for first in range(1, count + 1, 5000):
            last = min(first + 4999, count)
            for job_id in range(first, last):
                store.record_created(job_id, record(job_id, count, now))
            await store.record_finished(record(last, count, now))
    finally:
        await store.stop()
        await close_database(pool)


def fill_history(state_dir: Path, count: int, now: float | None = None) -> float:
    """
    Write C{count} finished jobs into the store under C{state_dir}, in a
    subprocess (it runs a reactor of its own); return the seconds it took.
    """
    started = time.perf_counter()
    argv = [
        sys.executable,
        __file__,
        str(state_dir),
        str(count),
        str(now if now is not None else time.time()),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent), *sys.path]
        ),
    }
    subprocess.run(argv, check=True, env=env, timeout=600)
    return time.perf_counter() - started


if __name__ == "__main__":
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    state, n, at = (
        sys.argv[1],
        int(sys.argv[2]),
        float(sys.argv[3]) if len(sys.argv) > 3 else time.time(),
    )
    react(lambda reactor: Deferred.fromCoroutine(_fill(reactor, state, n, at)))
