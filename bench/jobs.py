"""
Benchmark of issue 2: trivial jobs through the daemon against a bare echo server.

N trivial jobs (C{core.job_test} with no params, so no sleep) are called and
awaited to SUCCESS from C{--clients} concurrent WebSocket clients, one call in
flight per client, against a midjobs daemon.  In the same run, just before, the
same N calls go to a bare Autobahn JSON-RPC echo server (C{bench/echo_server.py}).

    /work/venv/bin/python bench/jobs.py [--count 20000] [--clients 32] [--profile daemon.pstats]

Both servers are subprocesses listening on 127.0.0.1; the load generator is
this process (one Twisted reactor, raw Autobahn client protocols, a byte
template per request and C{json.loads} per answer).  Each daemon client logs in
(C{auth.login}) and sets C{legacy_jobs} false, so the answer to a job call comes
when the job ends, with its result (C{True} for SUCCESS).

Reported: calls per second for both servers and their ratio (target: the
daemon at >= 50% of the echo rate), also by tenths of the run; the CPU each
process used during the timed window, as a share of a core and per call (a
generator near 100% of one core is the bottleneck, and is flagged; so is a
machine busy with other work); the daemon's CPU split between its reactor
thread and its other threads, and its job records per transaction; the
daemon's RSS idle, before the run, after N/2 and after N jobs, and its peak
(VmHWM) (target: no growth from N/2 to N); the echo server's; and one JSON
line with every figure.  See bench/README.md.

C{--no-history} runs the daemon without its job history.  C{--profile FILE}
runs the daemon under cProfile (slower: not for the figures) and prints its
top functions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any

from servers import HOST, Server  # noqa: E402  (bench/servers.py)
from procstats import free_port, main_thread_cpu, print_profile, proc_status, system_busy  # noqa: E402  (bench/procstats.py)

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet.task import react

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
USERNAME = "bench"
PASSWORD = "bench-password-not-secret"
JOBS_KEPT = 1000

#: The generator counts as saturated above this share of one core.
SATURATED = 0.90
#: RSS after N jobs may exceed RSS after N/2 by this much before it counts as growth.
GROWTH_TOLERANCE = 0.05
GROWTH_SLACK_MIB = 1.0
#: Other processes using more than this share of a core make the rates unreliable.
BUSY_MACHINE = 0.25

_MISSING = object()


# Processes.


_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """
    CPU seconds (user + system) used so far by C{pid}.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


# The load generator.


class LoadProtocol(WebSocketClientProtocol):
    """
    One client: set-up calls first, then one timed call at a time until its share is done.
    """

    factory: LoadFactory

    def onOpen(self) -> None:
        run = self.factory.run
        self.run = run
        self.next_id = 0
        self.remaining = 0
        self.setup = list(run.setup_calls)
        self.timing = False
        run.clients.append(self)
        self._next_setup()

    def _next_setup(self) -> None:
        if self.setup:
            method, params, _ = self.setup[0]
            request = {"jsonrpc": "2.0", "id": 0, "method": method, "params": params}
            self.sendMessage(json.dumps(request).encode(), isBinary=False)
        else:
            self.run.client_ready()

    def start(self, share: int) -> None:
        self.remaining = share
        self.timing = True
        if share:
            self._call()

    def _call(self) -> None:
        self.next_id += 1
        self.sendMessage(self.run.template % self.next_id, isBinary=False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        if "id" not in message:
            return  # a notification (an event): not an answer
        run = self.run
        if not self.timing:
            method, _, check = self.setup.pop(0)
            if "error" in message or not check(message.get("result")):
                run.fail(f"set-up call {method} answered {message!r}")
                return
            self._next_setup()
            return
        if message.get("id") != self.next_id or message.get("result", _MISSING) != run.expected:
            run.fail(f"call {self.next_id} answered {message!r}")
            return
        self.remaining -= 1
        if self.remaining:
            self._call()
        run.call_done()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        run = getattr(self, "run", None) or self.factory.run
        if not run.finished:
            run.fail(f"connection closed during the run: code={code} reason={reason}")


class LoadFactory(WebSocketClientFactory):
    protocol = LoadProtocol

    def __init__(self, run: LoadRun, url: str) -> None:
        super().__init__(url=url)
        self.run = run
        # The generator's own per-message work, kept minimal: no UTF-8 check of answers.
        self.setProtocolOptions(utf8validateIncoming=False, openHandshakeTimeout=30)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.run.fail(f"connection failed: {reason.getErrorMessage()}")


class LoadRun:
    """
    N calls of C{method(*params)} from C{clients} connections, each doing its share in turn.

    @ivar setup_calls: (method, params, check) done by each client before the timed calls.
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        path: str,
        count: int,
        clients: int,
        method: str,
        params: list[Any],
        expected: Any,
        setup_calls: list[tuple[str, list[Any], Any]],
        on_checkpoint: Any,
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.url = f"ws://{HOST}:{port}{path}"
        self.count = count
        self.n_clients = clients
        self.expected = expected
        self.setup_calls = setup_calls
        #: At these counts of answers, on_checkpoint(count) is called: each tenth (the half among them).
        self.checkpoints = {count * k // 10 for k in range(1, 10)}
        self.on_checkpoint = on_checkpoint
        self.clients: list[LoadProtocol] = []
        self.ready_count = 0
        self.completed = 0
        self.finished = False
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.done: defer.Deferred[None] = defer.Deferred()
        self.template = (
            json.dumps({"jsonrpc": "2.0", "id": 0, "method": method, "params": params})
            .replace('"id": 0', '"id": %d', 1)
            .encode()
        )
        self.t_start = self.t_end = 0.0
        self.cpu_start = self.cpu_end = 0.0

    def connect(self) -> None:
        factory = LoadFactory(self, self.url)
        for _ in range(self.n_clients):
            self.reactor.connectTCP(HOST, self.port, factory, timeout=30)

    def client_ready(self) -> None:
        self.ready_count += 1
        if self.ready_count == self.n_clients and not self.ready.called:
            self.ready.callback(None)

    def start(self) -> None:
        base, extra = divmod(self.count, self.n_clients)
        self.t_start = time.perf_counter()
        self.cpu_start = time.process_time()
        for i, client in enumerate(self.clients):
            client.start(base + (1 if i < extra else 0))

    def call_done(self) -> None:
        self.completed += 1
        if self.completed in self.checkpoints:
            self.on_checkpoint(self.completed)
        if self.completed == self.count:
            self.t_end = time.perf_counter()
            self.cpu_end = time.process_time()
            self.finished = True
            self.done.callback(None)

    def fail(self, why: str) -> None:
        if self.finished:
            return
        self.finished = True
        error = RuntimeError(why)
        for d in (self.ready, self.done):
            if not d.called:
                d.errback(error)

    def close(self) -> None:
        self.finished = True
        for client in self.clients:
            client.sendClose(code=1000)

    @property
    def wall(self) -> float:
        return self.t_end - self.t_start

    @property
    def generator_cpu(self) -> float:
        return self.cpu_end - self.cpu_start


async def drive(
    reactor: Any,
    server: Server,
    port: int,
    path: str,
    args: argparse.Namespace,
    method: str,
    params: list[Any],
    expected: Any,
    setup_calls: list[tuple[str, list[Any], Any]],
) -> dict[str, Any]:
    """
    Connect the clients, time the N calls, and sample the server's memory and CPU.
    """
    samples: dict[str, Any] = {}
    marks: list[tuple[int, float, float]] = []  # (answers, wall clock, server CPU)

    def checkpoint(done: int) -> None:
        marks.append((done, time.perf_counter(), proc_cpu(server.pid)))
        if done == args.count // 2:
            samples["half"] = proc_status(server.pid)

    run = LoadRun(
        reactor,
        port,
        path,
        args.count,
        args.clients,
        method,
        params,
        expected,
        setup_calls,
        on_checkpoint=checkpoint,
    )
    run.connect()
    await run.ready.addTimeout(60, reactor)
    samples["before"] = proc_status(server.pid)
    server_cpu = proc_cpu(server.pid)
    main_cpu = main_thread_cpu(server.pid)
    busy = system_busy()
    run.start()
    marks.append((0, run.t_start, server_cpu))
    await run.done.addTimeout(120 + args.count / 20, reactor)
    busy = system_busy() - busy
    end_cpu = proc_cpu(server.pid)
    main_cpu = main_thread_cpu(server.pid) - main_cpu
    marks.append((args.count, run.t_end, end_cpu))
    server_cpu = end_cpu - server_cpu
    # Calls/s and server CPU us per call over each tenth of the run.
    tenths = [
        ((n1 - n0) / (t1 - t0), (c1 - c0) / (n1 - n0) * 1e6)
        for (n0, t0, c0), (n1, t1, c1) in zip(marks, marks[1:])
        if n1 > n0 and t1 > t0
    ]
    samples["end"] = proc_status(server.pid)
    run.close()
    return {
        "calls_per_s": args.count / run.wall,
        "wall_s": run.wall,
        "server_cpu": server_cpu / run.wall,
        # The reactor's thread; the rest of server_cpu is the server's other threads.
        "main_thread_cpu": main_cpu / run.wall,
        "generator_cpu": run.generator_cpu / run.wall,
        # Whatever else ran on the machine meanwhile (other processes' share of the CPUs).
        "other_cpu": max(0.0, busy - server_cpu - run.generator_cpu) / run.wall,
        "rss_before": samples["before"]["VmRSS"],
        "rss_half": samples.get("half", samples["end"])["VmRSS"],
        "rss_end": samples["end"]["VmRSS"],
        "peak": samples["end"]["VmHWM"],
        "tenths": tenths,
    }


# The two servers.


async def bench_echo(reactor: Any, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    port = free_port()
    server = Server(
        "echo server",
        [sys.executable, os.path.join(BENCH_DIR, "echo_server.py"), "--port", str(port), "--interface", HOST],
        os.path.join(tmp, "echo.log"),
    )
    try:
        await server.wait_listening(reactor, port)
        idle = proc_status(server.pid)["VmRSS"]
        result = await drive(reactor, server, port, "", args, "core.job_test", [], [], [])
        result["rss_idle"] = idle
        result["peak"] = proc_status(server.pid)["VmHWM"]
        return result
    finally:
        server.stop()


class Scraper:
    """
    GETs the daemon's /metrics every C{interval} seconds, as Prometheus would
    (one request at a time, a fresh connection each), while the jobs run.
    """

    def __init__(self, reactor: Any, url: str, authorization: bytes, interval: float = 1.0) -> None:
        import treq
        from twisted.internet.task import LoopingCall
        from twisted.web.client import HTTPConnectionPool

        self._treq = treq
        self._url = url
        self._headers = {b"Authorization": [authorization]}
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._loop = LoopingCall(self._scrape)
        self._loop.clock = reactor
        self._interval = interval
        self.scrapes = 0
        self.failures = 0
        self.bytes = 0

    def start(self) -> None:
        self._loop.start(self._interval, now=True)

    async def stop(self) -> None:
        self._loop.stop()
        await self._pool.closeCachedConnections()

    def _scrape(self) -> Any:
        return defer.ensureDeferred(self._get())

    async def _get(self) -> None:
        try:
            response = await self._treq.get(self._url, headers=self._headers, pool=self._pool)
            body = await self._treq.content(response)
        except Exception:
            self.failures += 1
            return
        if response.code != 200:
            self.failures += 1
            return
        self.scrapes += 1
        self.bytes = len(body)


async def bench_daemon(reactor: Any, args: argparse.Namespace, tmp: str, scrape: bool | None = None) -> dict[str, Any]:
    """
    The daemon's run; with C{scrape} (default C{--scrape}), /metrics is
    scraped every second while the jobs run.
    """
    from midjobs.client import connect

    if scrape is None:
        scrape = getattr(args, "scrape", False)
    port = free_port()
    state_dir = os.path.join(tmp, "state")
    sock = os.path.join(tmp, "s.sock")
    # python -m twisted runs twist: twistd's foreground-only successor (no pidfile, no fork).
    if args.profile:
        argv = [sys.executable, os.path.join(BENCH_DIR, "twist_profiled.py"), args.profile]
    else:
        argv = [sys.executable, "-m", "twisted"]
    argv += [
        "--log-format=text", f"--log-level={args.daemon_log_level}", "midjobs",
        "--state-dir", state_dir,
        "--listen", f"tcp:{port}:interface={HOST}",
        "--socket", sock,
    ]  # fmt: skip
    if args.no_history:
        args.config = os.path.join(tmp, "no-history.ini")
        with open(args.config, "w") as f:
            f.write("[jobs]\nhistory = false\n")
    if args.config:
        argv += ["--config", args.config]
    server = Server("midjobs daemon", argv, os.path.join(tmp, "daemon.log"))
    try:
        await server.wait_listening(reactor, port, (sock,))
        idle = proc_status(server.pid)["VmRSS"]

        # A FULL_ADMIN user, made over the UNIX socket (root there is trusted without login).
        admin = await connect(f"ws+unix://{sock}", reactor=reactor, call_timeout=60)
        try:
            await admin.call("user.create", {"username": USERNAME, "password": PASSWORD, "roles": ["FULL_ADMIN"]})
            if scrape:
                # Prometheus's own user and API key, as docs/operations.rst sets them up.
                await admin.call("user.create", {"username": "prometheus", "password": PASSWORD, "roles": ["METRICS_READ"]})
                key = (await admin.call("api_key.create", {"name": "prometheus", "username": "prometheus"}))["key"]
        finally:
            await admin.close()
        check = await connect(f"ws://{HOST}:{port}/api/current", reactor=reactor, call_timeout=60)
        try:
            if not await check.login(USERNAME, PASSWORD):
                raise RuntimeError(f"cannot log in as {USERNAME} over TCP")
        finally:
            await check.close()

        setup = [
            ("auth.login", [USERNAME, PASSWORD], lambda r: r is True),
            ("core.set_options", [{"legacy_jobs": False}], lambda r: isinstance(r, dict) and r.get("legacy_jobs") is False),
        ]
        scraper = None
        if scrape:
            scraper = Scraper(reactor, f"http://{HOST}:{port}/metrics", b"Bearer " + key.encode())
            scraper.start()
        try:
            result = await drive(reactor, server, port, "/api/current", args, "core.job_test", [], True, setup)
        finally:
            if scraper is not None:
                await scraper.stop()
        if scraper is not None:
            if scraper.failures or not scraper.scrapes:
                raise RuntimeError(f"/metrics: {scraper.scrapes} scrapes, {scraper.failures} failed")
            result["scrapes"] = scraper.scrapes
            result["metrics_bytes"] = scraper.bytes
        result["rss_idle"] = idle

        # How many jobs the daemon still lists (it keeps the newest finished ones).
        admin = await connect(f"ws+unix://{sock}", reactor=reactor, call_timeout=60)
        try:
            result["jobs_listed"] = await admin.call("core.get_jobs", [], {"count": True})
        finally:
            await admin.close()
        result["peak"] = proc_status(server.pid)["VmHWM"]
    finally:
        server.stop()
    result["history_writes"] = history_writes(server.log_tail(200))
    return result


#: What the daemon logs of its job history as it stops (midjobs.store.jobs).
_HISTORY_WRITES = re.compile(r"Job store: (\d+) record\(s\) written in (\d+) transaction\(s\)")


def history_writes(log: str) -> tuple[int, int] | None:
    """
    How many job records the daemon wrote, and in how many transactions, as
    its C{log} says when it stops; C{None} without a job history.
    """
    found = _HISTORY_WRITES.findall(log)
    if not found:
        return None
    records, transactions = found[-1]
    return int(records), int(transactions)


# Report.


def report(args: argparse.Namespace, echo: dict[str, Any], daemon: dict[str, Any]) -> dict[str, Any]:
    for r in (echo, daemon):
        r["server_us"] = r["server_cpu"] * r["wall_s"] / args.count * 1e6
        r["main_thread_us"] = r["main_thread_cpu"] * r["wall_s"] / args.count * 1e6
        r["generator_us"] = r["generator_cpu"] * r["wall_s"] / args.count * 1e6
    ratio = daemon["calls_per_s"] / echo["calls_per_s"]
    cpu_ratio = echo["server_us"] / daemon["server_us"]
    growth = daemon["rss_end"] - daemon["rss_half"]
    grows = growth > daemon["rss_half"] * GROWTH_TOLERANCE + GROWTH_SLACK_MIB
    cpus = os.cpu_count() or 1

    print(f"midjobs jobs benchmark: N={args.count} calls, {args.clients} clients, {cpus} CPUs")
    print()
    print(
        f"{'':24}{'calls/s':>9}{'wall s':>8}{'server CPU':>11}{'us/call':>9}"
        f"{'generator CPU':>14}{'us/call':>9}{'others CPU':>11}"
    )
    for name, r in (("echo server", echo), ("midjobs daemon (jobs)", daemon)):
        print(
            f"{name:24}{r['calls_per_s']:>9.1f}{r['wall_s']:>8.2f}{r['server_cpu']:>11.0%}{r['server_us']:>9.0f}"
            f"{r['generator_cpu']:>14.0%}{r['generator_us']:>9.0f}{r['other_cpu']:>11.0%}"
        )
    print("(CPU: share of one core during the timed calls, and CPU microseconds per call;")
    print(" 'others' is every other process on the machine meanwhile)")
    threads = daemon["server_us"] - daemon["main_thread_us"]
    print(
        f"daemon us/call by thread:  reactor {daemon['main_thread_us']:.0f}, others {threads:.0f} "
        "(the job history's writer, the thread pool)"
    )
    writes = daemon["history_writes"]
    if writes is None:
        print("job history: off" if args.no_history else "job history: the daemon did not log its writes")
    else:
        records, transactions = writes
        print(f"job history: {records} records in {transactions} transactions ({records / max(transactions, 1):.1f} each)")
    for name, r in (("echo", echo), ("daemon", daemon)):
        print(f"{name + ' by tenths of N':24}" + " ".join(f"{rate:>6.0f}/s" for rate, _ in r["tenths"]))
        print(f"{'  server us/call':24}" + " ".join(f"{us:>8.0f}" for _, us in r["tenths"]))
    print(f"ratio daemon/echo, calls/s:       {ratio:.3f}   target >= 0.50: {'OK' if ratio >= 0.5 else 'MISSED'}")
    print(f"ratio echo/daemon, CPU per call:  {cpu_ratio:.3f}   (the calls/s ratio when both servers are CPU-bound)")
    print()
    print(f"{'memory (MiB)':24}{'RSS idle':>10}{'RSS before':>12}{'RSS N/2':>9}{'RSS N':>9}{'peak':>9}")
    for name, r in (("echo server", echo), ("midjobs daemon", daemon)):
        print(
            f"{name:24}{r['rss_idle']:>10.1f}{r['rss_before']:>12.1f}{r['rss_half']:>9.1f}"
            f"{r['rss_end']:>9.1f}{r['peak']:>9.1f}"
        )
    print("(idle: just started; before: clients connected and logged in; peak: VmHWM at the end)")
    print(
        f"daemon RSS from N/2 to N jobs: {growth:+.1f} MiB ({growth / daemon['rss_half']:+.1%}); "
        f"target no growth past the {JOBS_KEPT} kept: {'GROWS' if grows else 'OK'}"
    )
    print(f"daemon lists {daemon['jobs_listed']} jobs after the run")

    for name, r in (("echo", echo), ("daemon", daemon)):
        if r["generator_cpu"] >= SATURATED:
            print(
                f"WARNING: the load generator used {r['generator_cpu']:.0%} of one core during the {name} run: "
                f"it is (near) the bottleneck, so the {name} calls/s is a lower bound"
            )
        if r["other_cpu"] >= BUSY_MACHINE:
            print(
                f"WARNING: other processes used {r['other_cpu']:.0%} of a core during the {name} run "
                f"({cpus} CPUs): calls/s are depressed and noisy; CPU us/call is the steadier figure"
            )
    if args.profile:
        print("NOTE: the daemon ran under cProfile; its figures are not representative")
    if args.daemon_log_level != "info":
        print(f"NOTE: the daemon ran with --log-level={args.daemon_log_level}")

    figures = {
        "count": args.count,
        "clients": args.clients,
        "daemon_log_level": args.daemon_log_level,
        "daemon_jobs_per_s": round(daemon["calls_per_s"], 1),
        "echo_calls_per_s": round(echo["calls_per_s"], 1),
        "ratio": round(ratio, 4),
        "daemon_peak_rss_mib": round(daemon["peak"], 1),
        "daemon_rss_idle_mib": round(daemon["rss_idle"], 1),
        "daemon_rss_before_mib": round(daemon["rss_before"], 1),
        "daemon_rss_half_mib": round(daemon["rss_half"], 1),
        "daemon_rss_end_mib": round(daemon["rss_end"], 1),
        "echo_peak_rss_mib": round(echo["peak"], 1),
        "daemon_jobs_listed": daemon["jobs_listed"],
        "daemon_cpu_us_per_job": round(daemon["server_us"], 1),
        "daemon_reactor_us_per_job": round(daemon["main_thread_us"], 1),
        "daemon_history": not args.no_history,
        "daemon_records_per_commit": round(writes[0] / max(writes[1], 1), 1) if writes is not None else None,
        "echo_cpu_us_per_call": round(echo["server_us"], 1),
        "cpu_ratio": round(cpu_ratio, 4),
        "daemon_cpu": round(daemon["server_cpu"], 3),
        "echo_cpu": round(echo["server_cpu"], 3),
        "generator_cpu_daemon_run": round(daemon["generator_cpu"], 3),
        "generator_cpu_echo_run": round(echo["generator_cpu"], 3),
        "other_cpu_daemon_run": round(daemon["other_cpu"], 3),
        "other_cpu_echo_run": round(echo["other_cpu"], 3),
    }
    print(json.dumps(figures))
    return figures


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000, help="calls per server (default: 20000)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent WebSocket clients (default: 32)")
    parser.add_argument("--profile", metavar="FILE", help="run the daemon under cProfile, stats to FILE")
    parser.add_argument("--profile-top", type=int, default=30, help="functions to show with --profile")
    parser.add_argument(
        "--daemon-log-level",
        default="info",
        choices=["debug", "info", "warn", "error", "critical"],
        help="the daemon's log level (default: info, as deployed)",
    )
    configs = parser.add_mutually_exclusive_group()
    configs.add_argument("--config", metavar="FILE", help="a configuration file for the daemon (--config)")
    configs.add_argument(
        "--no-history", action="store_true", help="run the daemon without its job history ([jobs] history = false)"
    )
    parser.add_argument(
        "--scrape", action="store_true", help="GET the daemon's /metrics every second during the run (bench/metrics.py compares)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, state)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.count < args.clients:
        parser.error("need --clients >= 1 and --count >= --clients")
    if args.profile:
        args.profile = os.path.abspath(args.profile)
    if args.config:
        args.config = os.path.abspath(args.config)
    return args


async def main(reactor: Any, argv: list[str]) -> None:
    args = parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="mjb-")  # short: the UNIX socket path must fit in sun_path
    try:
        echo = await bench_echo(reactor, args, tmp)
        daemon = await bench_daemon(reactor, args, tmp)
    except BaseException:
        print(f"benchmark failed; logs in {tmp}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    report(args, echo, daemon)
    if args.keep:
        print(f"logs and state kept in {tmp}")
    if args.profile:
        print_profile(args.profile, args.profile_top)


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
