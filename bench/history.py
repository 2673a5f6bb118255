"""
Benchmark of the job history: indexed core.get_jobs queries as the store grows,
and what recording jobs costs the trivial-job throughput.

    /work/venv/bin/python bench/history.py [queries|throughput|all] [options]

C{queries}: two daemons run side by side, one on a state directory whose store
holds C{--small} (1,000) jobs, one on C{--large} (100,000).  The same queries go
to both over the WebSocket (TCP, logged in), one call in flight, alternating
between the daemons round by round so that both see the same machine:

- C{id}: C{core.get_jobs([["id", "=", N]])} for stored ids spread over the store;
- C{method+state}: C{core.get_jobs([["method", "=", M], ["state", "=", "FAILED"]], {"limit": 10})};
- C{method+state newest}: the same with C{"order_by": ["-id"]}.

Target: each takes no more than twice as long at C{--large} as at C{--small}
(median latency; the ratio is reported with p90 and mean beside it).

C{throughput}: bench/jobs.py's daemon run (N trivial jobs from C clients,
new-style, each awaited to SUCCESS) with the store on and off (C{[jobs] history
= false}), alternating for C{--rounds} rounds.  Target: with the store on, jobs/s
within 10% of the figure with it off.  The CPU microseconds per job are shown
beside it: on a busy machine they are the steadier figure.

One JSON line with every figure ends the output.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from twisted.internet.task import react

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.dirname(BENCH_DIR))

import jobs as jobs_bench  # noqa: E402  (bench/jobs.py)
from jobs import HOST, PASSWORD, USERNAME, Server, free_port  # noqa: E402

METHODS = [f"app{i}.task" for i in range(5)]
STATES = ["SUCCESS"] * 90 + ["FAILED"] * 8 + ["ABORTED"] * 2
TARGET_QUERY_RATIO = 2.0
TARGET_THROUGHPUT = 0.90


# Stores of a given size.


def record(job_id: int, now: float) -> dict[str, Any]:
    """
    A finished job like those a daemon keeps: spread over 20 days, some failed.
    """
    utc = datetime.timezone.utc
    mixed = (job_id * 2654435761) % 2**32
    state = STATES[(mixed >> 8) % len(STATES)]
    started = datetime.datetime.fromtimestamp(now - 20 * 86400 + job_id * 1.5 % (20 * 86400), utc)
    return {
        "id": job_id,
        "message_ids": [job_id % 97],
        "method": METHODS[mixed % len(METHODS)],
        "arguments": [{"target": f"pool/dataset{job_id % 50}", "recursive": bool(job_id % 2)}],
        "transient": False,
        "description": f"Task {job_id}",
        "abortable": True,
        "logs_path": None,
        "logs_excerpt": None,
        "progress": {"percent": 100, "description": "done", "extra": None},
        "result": {"done": job_id} if state == "SUCCESS" else None,
        "result_encoding_error": None,
        "error": "[EFAULT] it broke" if state == "FAILED" else ("Job aborted" if state == "ABORTED" else None),
        "exception": "Traceback (most recent call last):\n  ...\nCallError: it broke\n" if state == "FAILED" else None,
        "exc_info": None,
        "state": state,
        "time_started": started,
        "time_finished": started + datetime.timedelta(seconds=3),
        "credentials": {"type": "LOGIN_PASSWORD", "data": {"username": "admin"}},
    }


async def fill_store(reactor: Any, state_dir: str, count: int) -> float:
    """
    Write C{count} job records through the store itself; return the seconds it took.
    """
    from midjobs.store import SQLiteJobStore, close_database, open_database

    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    pool = open_database(os.path.join(state_dir, "midjobs.db"), reactor=reactor)
    store = SQLiteJobStore(pool, reactor)
    started = time.perf_counter()
    try:
        await store.setup()
        now = time.time()
        for first in range(1, count + 1, 5000):
            for job_id in range(first, min(first + 5000, count + 1)):
                store.record_created(job_id, record(job_id, now))
            await store.record_finished(record(min(first + 4999, count), now))
    finally:
        await store.stop()
        await close_database(pool)
    return time.perf_counter() - started


class Daemon:
    """
    A daemon subprocess on a state directory, and a logged-in client.
    """

    def __init__(self, name: str, tmp: str, config: str) -> None:
        self.name = name
        self.state_dir = os.path.join(tmp, name)
        self.sock = os.path.join(tmp, f"{name}.sock")
        self.port = free_port()
        self.config = config
        self.server: Server | None = None
        self.client: Any = None

    async def start(self, reactor: Any, log_level: str) -> None:
        from midjobs.client import connect

        argv = [
            sys.executable, "-m", "twisted", "--log-format=text", f"--log-level={log_level}", "midjobs",
            "--config", self.config, "--state-dir", self.state_dir,
            "--listen", f"tcp:{self.port}:interface={HOST}", "--socket", self.sock,
        ]  # fmt: skip
        self.server = Server(f"daemon {self.name}", argv, self.state_dir + ".log")
        await self.server.wait_listening(reactor, self.port, (self.sock,))
        admin = await connect(f"ws+unix://{self.sock}", reactor=reactor, call_timeout=60)
        try:
            await admin.call("user.create", {"username": USERNAME, "password": PASSWORD, "roles": ["FULL_ADMIN"]})
        finally:
            await admin.close()
        self.client = await connect(f"ws://{HOST}:{self.port}/api/current", reactor=reactor, call_timeout=120)
        if not await self.client.login(USERNAME, PASSWORD):
            raise RuntimeError(f"cannot log in to {self.name}")

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.server is not None:
            self.server.stop()


def write_config(path: str, history: bool) -> str:
    with open(path, "w") as f:
        f.write(f"[jobs]\nhistory = {'true' if history else 'false'}\nkeep_records = 1000000\nkeep_days = 3650\n")
    return path


# Queries.


def query_kinds(count: int) -> dict[str, Any]:
    """
    For each kind of query, a function of the call's index giving its (filters, options).
    """
    method = METHODS[3]
    # Every query finds as many rows in the small store as in the large one.

    def by_id(i: int) -> tuple[Any, Any]:
        return [["id", "=", 1 + (i * 7919) % count]], {}

    def method_state(i: int) -> tuple[Any, Any]:
        return [["method", "=", METHODS[i % len(METHODS)]], ["state", "=", "FAILED"]], {"limit": 10}

    def newest(i: int) -> tuple[Any, Any]:
        return [["method", "=", method], ["state", "=", "FAILED"]], {"order_by": ["-id"], "limit": 10}

    return {"id": by_id, "method+state": method_state, "method+state newest": newest}


async def time_queries(daemon: Daemon, make: Any, count: int, first: int) -> list[float]:
    times = []
    for i in range(first, first + count):
        filters, options = make(i)
        started = time.perf_counter()
        rows = await daemon.client.call("core.get_jobs", filters, options)
        times.append(time.perf_counter() - started)
        if len(rows) != options.get("limit", 1):
            raise RuntimeError(f"{daemon.name}: {len(rows)} rows for {filters} {options}")
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "p90_ms": ordered[int(len(ordered) * 0.9)] * 1e3,
        "mean_ms": statistics.fmean(ordered) * 1e3,
    }


async def bench_queries(reactor: Any, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    config = write_config(os.path.join(tmp, "history-on.toml"), True)
    sizes = {"small": args.small, "large": args.large}
    daemons = {name: Daemon(name, tmp, config) for name in sizes}
    fill = {}
    for name, size in sizes.items():
        fill[name] = await fill_store(reactor, daemons[name].state_dir, size)
    try:
        for daemon in daemons.values():
            await daemon.start(reactor, args.daemon_log_level)
        kinds = {name: query_kinds(size) for name, size in sizes.items()}
        times: dict[str, dict[str, list[float]]] = {k: {name: [] for name in sizes} for k in kinds["small"]}
        # Warm up each daemon (page cache, code paths), then alternate round by round.
        for name, daemon in daemons.items():
            for kind, make in kinds[name].items():
                await time_queries(daemon, make, 20, 10_000)
        for round_ in range(args.rounds):
            for kind in times:
                order = list(sizes) if round_ % 2 == 0 else list(reversed(sizes))
                for name in order:
                    times[kind][name] += await time_queries(
                        daemons[name], kinds[name][kind], args.per_round, round_ * args.per_round
                    )
    finally:
        for daemon in daemons.values():
            await daemon.stop()
    results: dict[str, Any] = {"fill_s": fill, "sizes": sizes, "queries": {}}
    for kind, by_size in times.items():
        small, large = summary(by_size["small"]), summary(by_size["large"])
        results["queries"][kind] = {
            "small": small,
            "large": large,
            "ratio_median": large["median_ms"] / small["median_ms"],
            "ratio_p90": large["p90_ms"] / small["p90_ms"],
            "ratio_mean": large["mean_ms"] / small["mean_ms"],
            "calls_each": len(by_size["small"]),
        }
    return results


def report_queries(results: dict[str, Any]) -> None:
    sizes = results["sizes"]
    print(f"core.get_jobs over the WebSocket, stores of {sizes['small']:,} and {sizes['large']:,} jobs")
    print(f"(filling the stores took {results['fill_s']['small']:.1f} s and {results['fill_s']['large']:.1f} s)")
    print()
    print(f"{'query':24}{'jobs':>9}{'median ms':>11}{'p90 ms':>9}{'mean ms':>9}")
    for kind, r in results["queries"].items():
        for size in ("small", "large"):
            s = r[size]
            print(f"{kind:24}{sizes[size]:>9,}{s['median_ms']:>11.2f}{s['p90_ms']:>9.2f}{s['mean_ms']:>9.2f}")
        verdict = "OK" if r["ratio_median"] <= TARGET_QUERY_RATIO else "MISSED"
        print(
            f"{'':24}ratio large/small: median {r['ratio_median']:.2f}, p90 {r['ratio_p90']:.2f}, "
            f"mean {r['ratio_mean']:.2f}   target <= {TARGET_QUERY_RATIO:.1f}: {verdict}"
        )
    print()


# Throughput with the store on and off.


async def bench_throughput(reactor: Any, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    configs = {
        "on": write_config(os.path.join(tmp, "history-on.toml"), True),
        "off": write_config(os.path.join(tmp, "history-off.toml"), False),
    }
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    jobs_args = argparse.Namespace(
        count=args.count, clients=args.clients, profile=None, daemon_log_level=args.daemon_log_level, config=None
    )
    for round_ in range(args.rounds):
        for mode in (("off", "on") if round_ % 2 == 0 else ("on", "off")):
            run_dir = tempfile.mkdtemp(prefix=f"h{mode}", dir=tmp)
            jobs_args.config = configs[mode]
            result = await jobs_bench.bench_daemon(reactor, jobs_args, run_dir)
            result["server_us"] = result["server_cpu"] * result["wall_s"] / args.count * 1e6
            runs[mode].append(result)
            print(
                f"  round {round_ + 1} store {mode:3}: {result['calls_per_s']:8.1f} jobs/s, "
                f"daemon {result['server_us']:6.0f} CPU us/job, others {result['other_cpu']:.0%} of a core",
                flush=True,
            )
    best = {mode: max(r["calls_per_s"] for r in rs) for mode, rs in runs.items()}
    mean = {mode: statistics.fmean(r["calls_per_s"] for r in rs) for mode, rs in runs.items()}
    cpu = {mode: statistics.fmean(r["server_us"] for r in rs) for mode, rs in runs.items()}
    return {
        "runs": {mode: [round(r["calls_per_s"], 1) for r in rs] for mode, rs in runs.items()},
        "cpu_us_per_job": {mode: round(v, 1) for mode, v in cpu.items()},
        "best_jobs_per_s": {mode: round(v, 1) for mode, v in best.items()},
        "mean_jobs_per_s": {mode: round(v, 1) for mode, v in mean.items()},
        "ratio_best": best["on"] / best["off"],
        "ratio_mean": mean["on"] / mean["off"],
        "ratio_cpu": cpu["off"] / cpu["on"],
        "other_cpu": max(r["other_cpu"] for rs in runs.values() for r in rs),
        "jobs_listed_on": runs["on"][-1]["jobs_listed"],
        "jobs_listed_off": runs["off"][-1]["jobs_listed"],
    }


def report_throughput(args: argparse.Namespace, t: dict[str, Any]) -> None:
    print()
    print(f"trivial jobs (bench/jobs.py's daemon run), N={args.count}, {args.clients} clients, {args.rounds} round(s)")
    print(f"{'':16}{'best jobs/s':>12}{'mean jobs/s':>13}{'CPU us/job':>12}{'listed after':>14}")
    for mode in ("off", "on"):
        print(
            f"{'store ' + mode:16}{t['best_jobs_per_s'][mode]:>12.1f}{t['mean_jobs_per_s'][mode]:>13.1f}"
            f"{t['cpu_us_per_job'][mode]:>12.1f}{t['jobs_listed_' + mode]:>14}"
        )
    verdict = "OK" if t["ratio_best"] >= TARGET_THROUGHPUT else "MISSED"
    print(
        f"store on/off: best {t['ratio_best']:.3f}, mean {t['ratio_mean']:.3f}   "
        f"target >= {TARGET_THROUGHPUT:.2f}: {verdict}"
    )
    print(f"CPU per job, off/on: {t['ratio_cpu']:.3f}   (what jobs/s would show on an idle machine)")
    if t["other_cpu"] >= jobs_bench.BUSY_MACHINE:
        print(
            f"WARNING: other processes used up to {t['other_cpu']:.0%} of a core during the runs: "
            "jobs/s are depressed and noisy; CPU us/job is the steadier figure"
        )


# Main.


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="all", choices=["queries", "throughput", "all"])
    parser.add_argument("--small", type=int, default=1000, help="jobs in the small store (default: 1000)")
    parser.add_argument("--large", type=int, default=100_000, help="jobs in the large store (default: 100000)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (default: 4)")
    parser.add_argument("--per-round", type=int, default=100, help="calls of each query per daemon per round")
    parser.add_argument("--count", type=int, default=10000, help="trivial jobs per throughput run (default: 10000)")
    parser.add_argument("--clients", type=int, default=32, help="clients in the throughput runs (default: 32)")
    parser.add_argument("--daemon-log-level", default="info", choices=["debug", "info", "warn", "error", "critical"])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, state)")
    return parser.parse_args(argv)


async def main(reactor: Any, argv: list[str]) -> None:
    args = parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="mjh-")
    figures: dict[str, Any] = {}
    try:
        if args.what in ("queries", "all"):
            queries = await bench_queries(reactor, args, tmp)
            report_queries(queries)
            figures["queries"] = {
                kind: {
                    "small_median_ms": round(r["small"]["median_ms"], 3),
                    "large_median_ms": round(r["large"]["median_ms"], 3),
                    "ratio_median": round(r["ratio_median"], 3),
                    "ratio_p90": round(r["ratio_p90"], 3),
                }
                for kind, r in queries["queries"].items()
            }
            figures["store_sizes"] = queries["sizes"]
        if args.what in ("throughput", "all"):
            print("throughput, the store off and on, alternating:", flush=True)
            throughput = await bench_throughput(reactor, args, tmp)
            report_throughput(args, throughput)
            figures["throughput"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in throughput.items()}
    except BaseException:
        print(f"benchmark failed; logs in {tmp}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.keep:
        print(f"logs and state kept in {tmp}")
    print(json.dumps(figures))


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
