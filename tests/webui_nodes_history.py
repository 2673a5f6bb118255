"""
A job history of several nodes written into a daemon's state directory
before it starts: L{webui_list_history}'s jobs, each with the C{node} that
ran it (one of L{NODES}, two jobs at a time in turn), for the browser tests
of the Node column and filter (C{test_webui_nodes.py}).

    python tests/webui_nodes_history.py STATE_DIR COUNT [NOW]

writes jobs 1..COUNT and exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import webui_list_history

#: The nodes that ran the written jobs.
NODES = ["alpha", "beta", "gamma"]


def node_of(job_id: int) -> str:
    """
    The node of job C{job_id}: two jobs on each node in turn, so that a node
    runs every method and every user's jobs.
    """
    return NODES[(job_id // 2) % len(NODES)]


def record(job_id: int, count: int, now: float) -> dict[str, Any]:
    return {**webui_list_history.record(job_id, count, now), "node": node_of(job_id)}


async def _fill(reactor: Any, state_dir: str, count: int, now: float) -> None:
    from midjobs.store import SQLiteJobStore, close_database, open_database

    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    pool = open_database(os.path.join(state_dir, "midjobs.db"), reactor=reactor)
    store = SQLiteJobStore(pool, reactor)
    try:
        await store.setup()
        for job_id in range(1, count):
            store.record_created(job_id, record(job_id, count, now))
        await store.record_finished(record(count, count, now))
    finally:
        await store.stop()
        await close_database(pool)


def fill_history(state_dir: Path, count: int, now: float) -> None:
    """
    Write C{count} finished jobs into the store under C{state_dir}, in a
    subprocess (it runs a reactor of its own).
    """
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here), *sys.path])}
    subprocess.run(
        [sys.executable, __file__, str(state_dir), str(count), str(now)], check=True, env=env, timeout=600
    )


if __name__ == "__main__":
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    state, n = sys.argv[1], int(sys.argv[2])
    at = float(sys.argv[3]) if len(sys.argv) > 3 else time.time()
    react(lambda reactor: Deferred.fromCoroutine(_fill(reactor, state, n, at)))
