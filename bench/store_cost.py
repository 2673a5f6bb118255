"""
What recording jobs costs, in process: the job machinery alone, without the
network, the WebSocket or a load generator, so that the figures are steady
enough to compare small changes.

    /work/venv/bin/python bench/store_cost.py [--count 20000] [--callers 32] [--rounds 3]

C{--callers} callers each start C{core.job_test} (no sleep) through
C{Middleware.call}, wait until it has ended, and start the next, until
C{--count} jobs have run.  Three variants, alternating round by round:

- C{off}: no job store (C{[jobs] history = false});
- C{null}: the real L{SQLiteJobStore}, whose pool acknowledges each write on
  the next reactor turn without running it: the cost of recording on the
  reactor thread (batching, encoding rows, holding jobs back until their
  record is durable), with no SQLite and no second thread;
- C{sqlite}: the real store on a database in a temporary directory.

Reported for each, as medians over the rounds: jobs/s, the process's CPU
microseconds per job (all threads) and the reactor thread's alone.  One JSON
line with every figure ends the output.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import react

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from midjobs.job import Job  # noqa: E402
from midjobs.middleware import Middleware  # noqa: E402
from midjobs.plugins.core import CoreService  # noqa: E402
from midjobs.store import SQLiteJobStore, close_database, open_database  # noqa: E402

VARIANTS = ("off", "null", "sqlite")


class NextTurnPool:
    """
    A stand-in for the store's connection pool: every interaction is
    acknowledged on the next reactor turn and never run.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def runInteraction(self, interaction: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._reactor.callLater(0, d.callback, None)
        return d

    #: How the store writes its batches of records.
    runWithConnection = runInteraction


class NullStore(SQLiteJobStore):
    """
    The real store on a L{NextTurnPool}, whose history is empty.
    """

    def last_id(self) -> Deferred[int]:
        return succeed(0)


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_jobs(reactor: Any, variant: str, count: int, callers: int, state_dir: Path) -> dict[str, float]:
    store: SQLiteJobStore | None = None
    pool = None
    if variant == "null":
        store = NullStore(NextTurnPool(reactor), reactor)  # type: ignore[arg-type]
    elif variant == "sqlite":
        pool = open_database(str(state_dir / "midjobs.db"), reactor=reactor)
        store = SQLiteJobStore(pool, reactor)
        await store.setup()
    middleware = Middleware(reactor, state_dir, job_store=store)
    middleware.add_service(CoreService)
    # As the daemon does: job ids at hand (from the store, if there is one).
    await middleware.start()
    left = count
    finished: Deferred[None] = Deferred()
    running = callers

    def start_next(_: object = None) -> None:
        nonlocal left, running
        if left == 0:
            running -= 1
            if running == 0:
                finished.callback(None)
            return
        left -= 1
        middleware.call("core.job_test").addCallback(ended).addCallbacks(next_turn, failed)

    def next_turn(_: object) -> None:
        # As the next request of a client would: on a later turn, not deeper in this stack.
        reactor.callLater(0, start_next)

    def ended(job: Job) -> Any:
        return None if job.state.finished else job.wait(raise_error=True)

    def failed(failure: Any) -> None:
        # The first failure ends the run (with its traceback); the others are dropped.
        if not finished.called:
            finished.errback(failure)

    cpu, thread_cpu, wall = process_cpu(), time.thread_time(), time.perf_counter()
    for _ in range(callers):
        start_next()
    await finished
    cpu, thread_cpu, wall = process_cpu() - cpu, time.thread_time() - thread_cpu, time.perf_counter() - wall
    if store is not None:
        await store.stop()
    if pool is not None:
        await close_database(pool)
    return {
        "jobs_per_s": count / wall,
        "cpu_us": cpu / count * 1e6,
        "reactor_us": thread_cpu / count * 1e6,
    }


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000, help="jobs per run (default: 20000)")
    parser.add_argument("--callers", type=int, default=32, help="jobs running at once (default: 32)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant (default: 3)")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="store-cost-")
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    try:
        for round_ in range(args.rounds):
            for variant in VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]:
                state_dir = Path(tempfile.mkdtemp(dir=tmp))
                result = await run_jobs(reactor, variant, args.count, args.callers, state_dir)
                runs[variant].append(result)
                print(
                    f"  round {round_ + 1} {variant:6}: {result['jobs_per_s']:8.0f} jobs/s, "
                    f"{result['cpu_us']:6.1f} CPU us/job, reactor thread {result['reactor_us']:6.1f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {
        v: {k: statistics.median(r[k] for r in rs) for k in ("jobs_per_s", "cpu_us", "reactor_us")}
        for v, rs in runs.items()
    }
    off = medians["off"]
    print()
    print(f"{args.count} trivial jobs, {args.callers} at once, in process, median of {args.rounds} round(s)")
    print(f"{'':8}{'jobs/s':>10}{'ratio':>8}{'CPU us/job':>12}{'reactor us/job':>16}{'added us/job':>14}")
    for variant, m in medians.items():
        print(
            f"{variant:8}{m['jobs_per_s']:>10.0f}{m['jobs_per_s'] / off['jobs_per_s']:>8.3f}"
            f"{m['cpu_us']:>12.1f}{m['reactor_us']:>16.1f}{m['cpu_us'] - off['cpu_us']:>14.1f}"
        )
    print(json.dumps({"count": args.count, "callers": args.callers, "rounds": args.rounds, "medians": medians}))


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
