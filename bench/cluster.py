"""
Benchmark of issue 13: a cluster of nodes on PostgreSQL against one daemon on SQLite.

    /work/main/.venv/bin/python bench/cluster.py [--count 5000] [--clients 16] [--event-rate 1000]
                                                 [--download-mib 1024] [--only sqlite_1,postgres_1]

One run, side by side:

1. Trivial jobs with history (C{core.job_test}, no params), called and
   awaited from C{--clients} WebSocket clients with bench/jobs.py's client
   loop (its C{LoadRun}, clients dealt over the nodes in turn): (a) one node
   on SQLite, (b) one node on PostgreSQL, (c) three nodes on PostgreSQL.
   Jobs per second, the ratios (b)/(a) (target >= 0.7) and (c)/(b) (target
   >= 1; on 2 cores this shows the overhead, not a speed-up), the CPU
   per job of the nodes and of the PostgreSQL server's processes, read from
   C{/proc/<pid>/stat} before and after, and the transactions PostgreSQL
   committed per job (C{pg_stat_database}: how well writes are grouped).
2. Cross-node event latency: jobs on n1 change their progress
   C{--event-rate} times a second in all, each change stamped with
   C{time.time_ns()}; a C{core.get_jobs} subscriber on n2 takes arrival
   minus stamp.  p50 and p99 (target p99 <= 50 ms).  One host, one clock.
3. A C{--download-mib} download (1 GiB by default) of a job on n1, fetched
   by curl from n1 and then through n2: MB/s of each, their ratio (target
   >= 0.7), and n2's RSS growth while it relays (VmRSS every 100 ms; target
   <= 32 MiB).

The PostgreSQL server is a private one (tests/postgres_server.py) with
C{fsync} and C{synchronous_commit} on, so that its durability is that of
SQLite's.  C{--only} runs some parts (C{--only sqlite_1,postgres_1} for the
ratio); each part names its nodes' pids on stderr, for a profiler
(C{py-spy record --pid}).  The nodes are C{twistd -n midjobs} subprocesses
(tests/cluster_nodes.py).  Parts this midjobs cannot run yet (no
C{--database} option, no PostgreSQL programs, a node refusing to start) are
reported as not run, with the reason.  Output: a Markdown table, then one
JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
sys.path[:0] = [BENCH_DIR, ROOT, os.path.join(ROOT, "tests")]
# The nodes load bench/cluster_services.py as a plugin: their PYTHONPATH
# (tests/conftest.py's subprocess_env) extends this process's.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [BENCH_DIR, os.environ.get("PYTHONPATH")]))

from jobs import PASSWORD, USERNAME, LoadFactory, LoadRun, proc_cpu  # noqa: E402  (bench/jobs.py)
from procstats import proc_status  # noqa: E402  (bench/procstats.py)
from servers import HOST  # noqa: E402  (bench/servers.py)
from twisted.internet import defer  # noqa: E402
from twisted.internet.task import deferLater, react  # noqa: E402
from twisted.internet.utils import getProcessOutputAndValue  # noqa: E402

from cluster_nodes import Node, NodeStarter  # noqa: E402  (tests/cluster_nodes.py)
from conftest import subprocess_env  # noqa: E402  (tests/conftest.py)
from postgres_server import PostgresServer, missing_binaries, start_postgres  # noqa: E402  (tests/postgres_server.py)

PLUGINS = ("cluster_services", "download_services")
#: The parts of the benchmark, in the order they run.
PARTS = ("sqlite_1", "postgres_1", "postgres_3", "event_latency", "download")
MiB = 1024 * 1024
#: Calls one client has in flight at once, below the daemon's limit per connection (20).
CALLS_IN_FLIGHT = 16


class NotRun(Exception):
    """
    A part of the benchmark this midjobs, or this machine, cannot run.
    """


class SpreadRun(LoadRun):
    """
    bench/jobs.py's L{LoadRun} with its clients dealt over several nodes in turn.
    """

    def __init__(self, reactor: Any, ports: list[int], **kwargs: Any) -> None:
        super().__init__(reactor, ports[0], "/api/current", **kwargs)
        self.ports = ports

    def connect(self) -> None:
        for i in range(self.n_clients):
            port = self.ports[i % len(self.ports)]
            self.reactor.connectTCP(HOST, port, LoadFactory(self, f"ws://{HOST}:{port}/api/current"), timeout=30)


def database_option() -> bool:
    """
    Whether this midjobs takes C{--database} (issue 13's nodes).
    """
    twistd = str(Path(sys.executable).parent / "twistd")
    help_text = subprocess.run([twistd, "midjobs", "--help"], env=subprocess_env(), capture_output=True, text=True,
                               check=False).stdout
    return "--database" in help_text


def postgres_pids(server: PostgresServer) -> list[int]:
    """
    The postmaster and its children (the backends of the nodes' connections).
    """
    postmaster = server.pid
    if postmaster is None:
        return []
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return pids


def cpu_of(pids: list[int]) -> dict[int, float]:
    seconds = {}
    for pid in pids:
        try:
            seconds[pid] = proc_cpu(pid)
        except OSError:
            continue
    return seconds


async def prepare(reactor: Any, cluster: Cluster) -> None:
    """
    The benchmark's administrator, made through the first node's UNIX
    socket; on PostgreSQL, a check that the nodes run as one cluster (each
    listed ONLINE by C{cluster.nodes}).
    """
    from midjobs.client import ClientCallError, JSONRPCError, connect

    admin = await connect(cluster.nodes[0].unix_url, reactor=reactor, call_timeout=60)
    try:
        await admin.call("user.create", {"username": USERNAME, "password": PASSWORD, "roles": ["FULL_ADMIN"]})
        if cluster.url is None:
            return
        try:
            listed = await admin.call("cluster.nodes")
        except (ClientCallError, JSONRPCError) as e:
            raise NotRun(f"this midjobs takes --database but runs no cluster yet (cluster.nodes: {e})") from None
        online = {node["name"] for node in listed if node.get("state") == "ONLINE"}
        if not {node.name for node in cluster.nodes} <= online:
            raise NotRun(f"the nodes are not all ONLINE: {listed}")
    finally:
        await admin.close()


async def logged_in(reactor: Any, node: Node) -> Any:
    from midjobs.client import connect

    client = await connect(node.ws_url, reactor=reactor, call_timeout=120)
    if not await client.login(USERNAME, PASSWORD):
        raise RuntimeError(f"cannot log in on {node.name}")
    return client


class Cluster:
    """
    Nodes for one part of the benchmark, with their database if any; stopped with L{stop}.
    """

    def __init__(self, root: Path, names: list[str], server: PostgresServer | None, database: str | None) -> None:
        self.server = server
        self.starter = NodeStarter(root)
        self.database = database
        self.url = server.url_for(database) if server is not None and database is not None else None
        if server is not None and database is not None:
            server.psql(f"CREATE DATABASE {database} OWNER {server.user} TEMPLATE template0;")
        self.nodes = self.starter(*names, database_url=self.url, plugins=PLUGINS)
        # For a profiler to attach to (py-spy record --pid).
        print(f"{root.name}: " + ", ".join(f"{node.name} pid {node.pid}" for node in self.nodes), file=sys.stderr)

    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes] + (postgres_pids(self.server) if self.server else [])

    def commits(self) -> int:
        """
        How many transactions the database committed so far (0 without one).
        """
        if self.server is None or self.database is None:
            return 0
        # The statistics of the current transaction are a snapshot: a fresh one each time.
        return int(self.server.psql(
            f"SELECT pg_stat_clear_snapshot(); SELECT xact_commit FROM pg_stat_database WHERE datname = '{self.database}';"
        ).split()[-1])

    def stop(self) -> None:
        self.starter.stop_all()


async def trivial_jobs(reactor: Any, args: argparse.Namespace, cluster: Cluster) -> dict[str, Any]:
    setup = [
        ("auth.login", [USERNAME, PASSWORD], lambda r: r is True),
        ("core.set_options", [{"legacy_jobs": False}], lambda r: isinstance(r, dict) and r.get("legacy_jobs") is False),
    ]
    run = SpreadRun(reactor, [node.port for node in cluster.nodes], count=args.count, clients=args.clients,
                    method="core.job_test", params=[], expected=True, setup_calls=setup,
                    on_checkpoint=lambda done: None)
    run.connect()
    await run.ready.addTimeout(120, reactor)
    before = cpu_of(cluster.pids())
    commits_before = cluster.commits()
    run.start()
    await run.done.addTimeout(120 + args.count / 20, reactor)
    after = cpu_of(cluster.pids())
    commits = cluster.commits() - commits_before
    run.close()
    node_pids = {node.pid for node in cluster.nodes}
    # A process that was not there at the start counts from 0.
    used = {pid: seconds - before.get(pid, 0.0) for pid, seconds in after.items()}
    nodes_cpu = sum(seconds for pid, seconds in used.items() if pid in node_pids)
    postgres_cpu = sum(seconds for pid, seconds in used.items() if pid not in node_pids)
    return {
        "jobs_per_s": args.count / run.wall,
        "nodes_cpu_us_per_job": nodes_cpu / args.count * 1e6,
        "postgres_cpu_us_per_job": postgres_cpu / args.count * 1e6,
        # Group commit at work: how many transactions the nodes' jobs took (0 on SQLite).
        "postgres_commits_per_job": commits / args.count,
    }


async def event_latency(reactor: Any, args: argparse.Namespace, cluster: Cluster) -> dict[str, Any]:
    n1, n2 = cluster.nodes[0], cluster.nodes[1]
    period = 1.05  # just over the progress throttle's second: every change is an event
    jobs = max(1, round(args.event_rate * period))
    changes = max(3, int(args.event_seconds / period))
    latencies: list[float] = []
    seen: set[tuple[Any, int]] = set()

    def event(msg: str, collection: str, id_: Any, fields: dict[str, Any]) -> None:
        extra = (fields.get("progress") or {}).get("extra")
        # A change's first event only: the job's end repeats its last progress.
        if msg == "changed" and isinstance(extra, dict) and "t" in extra and (id_, extra["t"]) not in seen:
            seen.add((id_, extra["t"]))
            latencies.append((time.time_ns() - extra["t"]) / 1e6)

    subscriber = await logged_in(reactor, n2)
    starter = await logged_in(reactor, n1)
    try:
        await subscriber.subscribe("core.get_jobs", event)
        ids: list[int] = []
        for first in range(0, jobs, CALLS_IN_FLIGHT):
            ids += await defer.gatherResults([
                starter.call("clusterbench.stamps", changes, period, i * period / jobs)
                for i in range(first, min(jobs, first + CALLS_IN_FLIGHT))
            ])
        deadline = reactor.seconds() + changes * period + 60
        while len(latencies) < jobs * changes and reactor.seconds() < deadline:
            await deferLater(reactor, 0.5, lambda: None)
        if not latencies:
            raise NotRun("no progress event of n1's jobs reached n2")
        latencies.sort()
        return {
            "events": len(latencies),
            "expected": jobs * changes,
            "jobs": len(ids),
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        }
    finally:
        await subscriber.close()
        await starter.close()


async def fetch(reactor: Any, url: str, watch: int | None) -> tuple[float, float]:
    """
    curl C{url} to nowhere: MB/s, and the growth of C{watch}'s VmRSS in MiB meanwhile.
    """
    base = proc_status(watch)["VmRSS"] if watch else 0.0
    peak = base
    done = getProcessOutputAndValue("curl", ["-sS", "-f", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
                                    reactor=reactor)
    while not done.called:
        if watch:
            peak = max(peak, proc_status(watch)["VmRSS"])
        await deferLater(reactor, 0.1, lambda: None)
    out, err, code = await done
    if code != 0:
        raise NotRun(f"curl {url.split('?')[0]}: {err.decode().strip()}")
    size, seconds = out.decode().split()
    return int(size) / float(seconds) / 1e6, peak - base


async def relayed_download(reactor: Any, args: argparse.Namespace, cluster: Cluster) -> dict[str, Any]:
    n1, n2 = cluster.nodes[0], cluster.nodes[1]
    size = args.download_mib * MiB
    client = await logged_in(reactor, n1)
    try:
        _, path = await client.call("core.download", "dl.async_write", [size], "big.bin")
        direct, _ = await fetch(reactor, n1.http_url + path, None)
        _, path = await client.call("core.download", "dl.async_write", [size], "big.bin")
        relayed, growth = await fetch(reactor, n2.http_url + path, n2.pid)
    finally:
        await client.close()
    return {"direct_mb_s": direct, "relayed_mb_s": relayed, "ratio": relayed / direct, "relay_rss_growth_mib": growth}


async def part(name: str, results: dict[str, Any], work: Any) -> None:
    """
    Run one part; a part that cannot run is recorded with its reason.
    """
    try:
        results[name] = await work()
    except NotRun as e:
        results[name] = {"not_run": str(e)}
    except Exception as e:
        results[name] = {"not_run": f"{type(e).__name__}: {e}"}
    print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)


def report(results: dict[str, Any]) -> None:
    def cell(name: str, key: str, form: str = "{:.0f}") -> str:
        value = results.get(name, {}).get(key)
        return form.format(value) if isinstance(value, (int, float)) else "-"

    print("| Trivial jobs with history | jobs/s | nodes' CPU µs/job | PostgreSQL CPU µs/job | commits/job |")
    print("|---|---|---|---|---|")
    for name, label in (("sqlite_1", "1 node, SQLite"), ("postgres_1", "1 node, PostgreSQL"),
                        ("postgres_3", "3 nodes, PostgreSQL")):
        if "not_run" in results.get(name, {}):
            print(f"| {label} | not run: {results[name]['not_run']} | | | |")
        else:
            print(f"| {label} | {cell(name, 'jobs_per_s')} | {cell(name, 'nodes_cpu_us_per_job')} | "
                  f"{cell(name, 'postgres_cpu_us_per_job')} | {cell(name, 'postgres_commits_per_job', '{:.3f}')} |")
    jobs = {name: results.get(name, {}).get("jobs_per_s") for name in ("sqlite_1", "postgres_1", "postgres_3")}
    if jobs["sqlite_1"] and jobs["postgres_1"]:
        print(f"\n1 node PostgreSQL / SQLite: {jobs['postgres_1'] / jobs['sqlite_1']:.2f} (target >= 0.7)")
    if jobs["postgres_1"] and jobs["postgres_3"]:
        print(f"3 nodes / 1 node PostgreSQL: {jobs['postgres_3'] / jobs['postgres_1']:.2f} (target >= 1)")
    latency = results.get("event_latency", {})
    if "not_run" in latency:
        print(f"\nCross-node event latency: not run: {latency['not_run']}")
    else:
        print(f"\nCross-node event latency: p50 {cell('event_latency', 'p50_ms', '{:.1f}')} ms, "
              f"p99 {cell('event_latency', 'p99_ms', '{:.1f}')} ms (target p99 <= 50 ms), "
              f"{cell('event_latency', 'events')} of {cell('event_latency', 'expected')} events")
    download = results.get("download", {})
    if "not_run" in download:
        print(f"Download through another node: not run: {download['not_run']}")
    else:
        print(f"Download through another node: {cell('download', 'relayed_mb_s')} MB/s against "
              f"{cell('download', 'direct_mb_s')} MB/s from its own node, ratio {cell('download', 'ratio', '{:.2f}')} "
              f"(target >= 0.7); relaying node's RSS +{cell('download', 'relay_rss_growth_mib', '{:.1f}')} MiB "
              "(target <= 32)")
    print(json.dumps(results))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000, help="trivial jobs per setup (default: 5000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent WebSocket clients (default: 16)")
    parser.add_argument("--event-rate", type=int, default=1000, help="progress events per second (default: 1000)")
    parser.add_argument("--event-seconds", type=float, default=10, help="how long the events flow (default: 10)")
    parser.add_argument("--download-mib", type=int, default=1024, help="the download's size in MiB (default: 1024)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, state)")
    parser.add_argument("--only", type=lambda text: text.split(","), default=list(PARTS), metavar="PART,...",
                        help=f"run only these parts, of {', '.join(PARTS)} (default: all)")
    args = parser.parse_args(argv)
    if not set(args.only) <= set(PARTS):
        parser.error(f"no such part: {', '.join(sorted(set(args.only) - set(PARTS)))}")
    if args.clients < 1 or args.count < args.clients:
        parser.error("need --clients >= 1 and --count >= --clients")
    return args


async def main(reactor: Any, argv: list[str]) -> None:
    args = parse_args(argv)
    os.nice(5)
    root = Path(tempfile.mkdtemp(prefix="mjc-"))
    results: dict[str, Any] = {}
    server: PostgresServer | None = None

    async def with_cluster(name: str, names: list[str], database: str | None, work: Any) -> None:
        if name not in args.only:
            return

        async def run() -> Any:
            if database is not None and server is None:
                raise NotRun(why_no_postgres)
            cluster = Cluster(root / name, names, server, database)
            try:
                await prepare(reactor, cluster)
                return await work(reactor, args, cluster)
            finally:
                cluster.stop()

        await part(name, results, run)

    why_no_postgres = ""
    if not database_option():
        why_no_postgres = "this midjobs has no --database option yet"
    elif missing_binaries():
        why_no_postgres = f"PostgreSQL is not installed ({', '.join(missing_binaries())} missing)"
    elif set(args.only) - {"sqlite_1"}:
        server = start_postgres(settings={"fsync": "on", "synchronous_commit": "on"})
    try:
        await with_cluster("sqlite_1", ["n1"], None, trivial_jobs)
        await with_cluster("postgres_1", ["n1"], "bench_one", trivial_jobs)
        await with_cluster("postgres_3", ["n1", "n2", "n3"], "bench_three", trivial_jobs)
        await with_cluster("event_latency", ["n1", "n2"], "bench_events", event_latency)
        await with_cluster("download", ["n1", "n2"], "bench_download", relayed_download)
    finally:
        if server is not None:
            server.destroy()
        if args.keep:
            print(f"logs and state kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(results)


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
