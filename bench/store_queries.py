"""
Benchmark of the job list's queries on the server side: C{core.get_jobs}'s
own function (L{midjobs.store.history.query_jobs}) over a large stored history
and the jobs in memory, in this process, for each filter kind the web page
sends, its count, and pages deep into the history.

    PYTHONPATH=<tree>:<tree>/tests python bench/store_queries.py [--history 100000] [--engine sqlite|postgresql]
        [--memory 200] [--repeat 5] [--tree TREE]

C{--history} finished jobs (C{tests/webui_list_history.py}'s records, with a
C{node} of three) are written through the store of C{--tree} (default: the
tree this file is in; give another checkout for a before/after comparison),
on SQLite in a temporary directory or on a private PostgreSQL server
(C{tests/postgres_server.py}).  C{--memory} recent jobs are in memory, as a
daemon holds them.  Each query is what the page sends (C{listquery.js}:
C{order_by} C{-id}, C{limit} 100, the list's C{select}; then its C{count}),
timed C{--repeat} times: median and max.  Target (issue 16): the page's
query and its count well within the 0.3 s a filter change may take in the
browser.  One JSON line with every figure ends the output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

LIST_FIELDS = [
    "id", "method", "description", "state", "progress", "time_started", "time_finished",
    "abortable", "logs_path", "error", "exc_info", "credentials", "node",
]
NODES = ["alpha", "beta", "gamma"]
PAGE = 100


def literal_regex(text: str) -> str:
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)


def search(text: str) -> list[Any]:
    """
    The page's search (C{listquery.js} C{queryFilters}).
    """
    pattern = literal_regex(text)
    fields = ["method", "description", "error", "arguments.0", "arguments.1", "arguments.2", "arguments.3"]
    return ["OR", [*([field, "C~", pattern] for field in fields), ["arguments", "Crin", text]]]


def queries(history: int, now: float) -> dict[str, tuple[list[Any], dict[str, Any]]]:
    """
    The queries timed, by name: the page's for each filter kind, its
    count, and pages deep.
    """
    page = {"order_by": ["-id"], "limit": PAGE, "select": LIST_FIELDS}
    day = 86400_000
    middle = int((now - 10 * 86400) * 1000)
    filters: dict[str, list[Any]] = {
        "none": [],
        "state": [["state", "=", "FAILED"], ["exc_info.errno", "!=", 103]],
        "aborted": [["state", "in", ["ABORTED", "FAILED"]], ["OR", [["state", "=", "ABORTED"], ["exc_info.errno", "=", 103]]]],
        "method": [["method", "=", "pool.scrub"]],
        "user": [["credentials.data.username", "=", "alice"]],
        "node": [["node", "=", "beta"]],
        "time range": [["time_started", ">=", {"$date": middle}], ["time_started", "<", {"$date": middle + day}]],
        "search": [search("disk 3 broke")],
        "search rare": [search("dataset49/x")],
    }
    out: dict[str, tuple[list[Any], dict[str, Any]]] = {}
    for name, spec in filters.items():
        out[name] = (spec, page)
        out[f"{name} count"] = (spec, {"count": True})
    deep = history * 9 // 10
    out[f"offset {deep}"] = ([], {**page, "offset": deep})
    out[f"user offset {deep // 3}"] = (filters["user"], {**page, "offset": deep // 3})
    out["by start time"] = ([], {**page, "order_by": ["-time_started", "-id"]})
    # SQL's order while every user is a string (else Python sorts every match).
    out["by user"] = ([], {**page, "order_by": ["credentials.data.username", "id"]})
    return out


def with_node(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "node": NODES[record["id"] % len(NODES)]}


async def fill(store: Any, history: int, now: float) -> float:
    from webui_list_history import record  # tests/webui_list_history.py

    started = time.perf_counter()
    for first in range(1, history + 1, 5000):
        last = min(first + 4999, history)
        for job_id in range(first, last):
            store.record_created(job_id, with_node(record(job_id, history, now)))
        await store.record_finished(with_node(record(last, history, now)))
    return time.perf_counter() - started


async def run(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    from midjobs import wire_json
    from midjobs.store import SQLiteJobStore, close_database, open_database
    from midjobs.store.history import query_jobs
    from webui_list_history import record

    now = time.time()
    tmp = tempfile.mkdtemp(prefix="midjobs-store-queries-")
    server = None
    result: dict[str, Any] = {"history": args.history, "memory": args.memory, "engine": args.engine, "tree": args.tree}
    try:
        if args.engine == "sqlite":
            path = os.path.join(tmp, "midjobs.db")
            pool = open_database(path, reactor=reactor)
            reader = open_database(path, reactor=reactor, connections=4)
            store: Any = SQLiteJobStore(pool, reactor, reader=reader)
            close = lambda: close_database(pool)  # noqa: E731
        else:
            from midjobs.store.pg import PgDatabase
            from midjobs.store.pg_jobs import PgJobStore
            from postgres_server import start_postgres

            server = start_postgres()
            db = PgDatabase(server.url, reactor, size=4)
            await db.open()
            await db.migrate()
            store = PgJobStore(db, reactor, node="alpha")
            close = db.close
        await store.setup()
        result["fill_s"] = await fill(store, args.history, now)
        print(f"{args.history:,} jobs stored in {result['fill_s']:.1f} s ({args.engine}, {args.tree})", flush=True)
        memory = wire_json.loads(wire_json.dumps(
            [with_node(record(i, args.history, now)) for i in range(args.history + 1, args.history + 1 + args.memory)]
        ))
        result["queries"] = {}
        for name, (filters, options) in queries(args.history, now).items():
            filters = wire_json.loads(wire_json.dumps(filters))  # $date as the wire brings it
            times = []
            answer: Any = None
            for _ in range(args.repeat):
                started = time.perf_counter()
                answer = await query_jobs(memory, store, filters, options)
                times.append(time.perf_counter() - started)
            rows = answer if isinstance(answer, int) else len(answer)
            result["queries"][name] = {
                "median_ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000, "answer": rows,
            }
            print(f"  {name:24s} median {statistics.median(times) * 1000:8.1f} ms, max {max(times) * 1000:8.1f} ms"
                  f"  ({'count ' if isinstance(answer, int) else 'rows '}{rows})", flush=True)
        await store.stop()
        await close()
    finally:
        if server is not None:
            server.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, default=100_000, help="stored jobs (default: 100000)")
    parser.add_argument("--memory", type=int, default=200, help="jobs in memory (default: 200)")
    parser.add_argument("--engine", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=5, help="times each query is timed (default: 5)")
    parser.add_argument("--tree", default=os.path.dirname(BENCH_DIR), help="the checkout whose midjobs is measured")
    args = parser.parse_args()
    args.tree = os.path.abspath(args.tree)
    sys.path[:0] = [args.tree, os.path.join(os.path.dirname(BENCH_DIR), "tests")]
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    def start(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            result = await run(reactor, args)
            print(json.dumps(result))

        return Deferred.fromCoroutine(go())

    react(start)


if __name__ == "__main__":
    main()
