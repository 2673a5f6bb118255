"""
The job path in one process: call -> queue -> run -> record -> end, without sockets.

C{--count} trivial jobs (C{core.job_test}) are called through the middleware
by 32 concurrent callers and awaited, with the SQLite job history on (the
default) or off (C{--no-history}).  Printed: jobs per second, the CPU the
whole process used per job (the history's writer thread included), and the
reactor thread's part of it.

    PYTHONPATH=$PWD python bench/job_path.py [--count 8000] [--no-history]

On a busy machine CPU times vary from run to run; instructions do not.  The
instructions per job are the difference between two counts under callgrind,
divided by the difference in jobs::

    valgrind --tool=callgrind python bench/job_path.py --count 640
    valgrind --tool=callgrind python bench/job_path.py --count 1920
    # ("Collected" of the second - that of the first) / 1280
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import react

from midjobs.auth import UserStore
from midjobs.middleware import Middleware
from midjobs.plugins.core import CoreService
from midjobs.store import JobHistory, SQLiteJobStore, open_database

CALLERS = 32
WARM_UP = 20


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=8000)
    parser.add_argument("--no-history", action="store_true")
    args = parser.parse_args(argv)
    state_dir = Path(tempfile.mkdtemp(prefix="midjobs-job-path-"))
    database = open_database(str(state_dir / "midjobs.db"))
    store = None if args.no_history else SQLiteJobStore(database, reactor)
    if store is not None:
        await JobHistory.open(store, reactor, state_dir / "jobs", keep_days=30, keep_records=10**6)
    middleware = Middleware(reactor, state_dir, users=UserStore(database), job_store=store)
    middleware.add_service(CoreService)
    await middleware.start()

    async def caller(jobs: int) -> None:
        for _ in range(jobs):
            job = await middleware.call("core.job_test")
            await job.wait()

    await defer.gatherResults([defer.ensureDeferred(caller(WARM_UP)) for _ in range(CALLERS)])
    each = args.count // CALLERS
    started, used, main_used = time.perf_counter(), cpu(), time.thread_time()
    await defer.gatherResults([defer.ensureDeferred(caller(each)) for _ in range(CALLERS)])
    seconds, used, main_used = time.perf_counter() - started, cpu() - used, time.thread_time() - main_used
    count = each * CALLERS
    history_note = "off" if store is None else "on"
    print(f"{count} jobs, history {history_note}: {count / seconds:.0f} jobs/s, {1e6 * used / count:.1f} CPU us/job, reactor thread {1e6 * main_used / count:.1f}")
    await middleware.stop()
    if store is not None:
        await store.stop()
    shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
