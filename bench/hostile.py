"""
Benchmark of issue 11: what each attack family costs an administrator.

For each family of attacks in bench/hostile_attacks.py, a fresh daemon is
started; the attacker (user C{bob}, no roles, or anonymous, from the source
address C{--attacker}, 127.0.0.2 by default) holds the attack for
C{--seconds} while an administrator from 127.0.0.1 probes the daemon every
100 ms.  Two rows with no attack, measured in the same run, are the baseline.

    .venv/bin/python bench/hostile.py [--seconds 10] [--only redos,logins] [--history-jobs 100000]

A probe is C{core.ping}, a trivial job (C{core.job_test}, answered when it
ends) and an indexed C{core.get_jobs} (by id) on a logged-in connection kept
open (C{session}), or, for the attacks on connections and logins, the same on
a new connection that first logs in with the admin's password (C{fresh
login}: its latency counts the connection and the calls but not the
C{auth.login}, whose password check costs a deliberate key derivation; the
login's own p50/p99 are shown beside it, and a refused login fails the probe).  A probe that fails or takes longer than C{--call-timeout} counts as
failed.  Reported per attack: probes made and failed, the probes' p50 and p99
latency, the daemon's RSS growth over the window (its peak RSS sampled every
100 ms minus its RSS just before the attack), its CPU share, and what the
attack achieved.  Targets: p99 <= 50 ms, RSS growth <= 64 MiB, no failed
probe.  One JSON line with every figure ends the output.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.dirname(BENCH_DIR))

from twisted.internet import defer  # noqa: E402
from twisted.internet.task import LoopingCall, deferLater, react  # noqa: E402

from hostile_attacks import ATTACKS, FRESH, SESSION, Attack, Target  # noqa: E402
from jobs import proc_cpu  # noqa: E402  (bench/jobs.py)
from procstats import free_port, proc_status  # noqa: E402
from servers import HOST, Server  # noqa: E402

ADMIN = ("admin", "admin-password-not-secret")
BOB = ("bob", "bob-password-not-secret")
TARGET_P99_MS = 50.0
TARGET_RSS_MIB = 64.0
#: The probe's period.
PERIOD = 0.1
CONFIG = "[jobs]\nkeep_records = 1000000\nkeep_days = 3650\n"


# The daemon.


class Daemon:
    """
    A daemon subprocess with a fresh state directory, its users made.
    """

    def __init__(self, tmp: str, name: str, args: argparse.Namespace) -> None:
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.state_dir = os.path.join(self.dir, "state")
        self.sock = os.path.join(self.dir, "s.sock")
        self.config = os.path.join(self.dir, "midjobs.toml")
        with open(self.config, "w") as f:
            f.write(CONFIG)
        self.port = free_port()
        self.args = args
        self.server: Server | None = None

    async def start(self, reactor: Any, history: int) -> None:
        from midjobs.client import connect

        if history:
            from history import fill_store  # bench/history.py

            started = time.perf_counter()
            await fill_store(reactor, self.state_dir, history)
            print(f"  (filled the history with {history:,} jobs in {time.perf_counter() - started:.1f} s)")
        argv = [
            sys.executable, "-m", "twisted", "--log-format=text", f"--log-level={self.args.daemon_log_level}",
            "midjobs", "--config", self.config, "--state-dir", self.state_dir,
            "--listen", f"tcp:{self.port}:interface={HOST}", "--socket", self.sock,
        ]  # fmt: skip
        # The daemon starts with the descriptor limit of a default systemd unit.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(self.args.daemon_nofile, hard), hard))
        try:
            self.server = Server("midjobs daemon", argv, os.path.join(self.dir, "daemon.log"))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        await self.server.wait_listening(reactor, self.port, (self.sock,), timeout=120)
        local = await connect(f"ws+unix://{self.sock}", reactor=reactor, call_timeout=60)
        try:
            await local.call("user.create", {"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
            await local.call("user.create", {"username": BOB[0], "password": BOB[1], "roles": []})
        finally:
            await local.close()

    @property
    def pid(self) -> int:
        assert self.server is not None
        return self.server.pid

    def alive(self) -> bool:
        return self.server is not None and self.server.proc.poll() is None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=10)


# The administrator's probe.


class Probe:
    """
    The administrator's calls every L{PERIOD}: each probe's latency, or why it failed.
    """

    def __init__(self, reactor: Any, daemon: Daemon, kind: str, timeout: float) -> None:
        self.reactor = reactor
        self.url = f"ws://{HOST}:{daemon.port}/api/current"
        self.kind = kind
        self.timeout = timeout
        self.session: Any = None
        self.latencies: list[float] = []
        self.failures: list[str] = []
        #: How long each fresh probe's C{auth.login} took (not counted in its latency:
        #: checking a password costs its key derivation, by design).
        self.logins: list[float] = []
        self._login_time = 0.0

    async def _logged_in(self) -> Any:
        from midjobs.client import connect

        client = await connect(self.url, reactor=self.reactor, timeout=self.timeout, call_timeout=self.timeout)
        try:
            started = time.perf_counter()
            if not await client.login(*ADMIN):
                raise RuntimeError("the admin's login was refused")
            self._login_time = time.perf_counter() - started
            await client.call("core.set_options", {"legacy_jobs": False})
        except BaseException:
            client.close()
            raise
        return client

    async def _calls(self, client: Any) -> None:
        if await client.call("core.ping") != "pong":
            raise RuntimeError("core.ping did not answer pong")
        if await client.call("core.job_test") is not True:
            raise RuntimeError("core.job_test did not succeed")
        await client.call("core.get_jobs", [["id", "=", 1]])

    async def _once(self) -> None:
        if self.kind == FRESH:
            client = await self._logged_in()
            try:
                await self._calls(client)
            finally:
                client.close()
            return
        if self.session is None or not self.session.connected:
            self.session = await self._logged_in()
        await self._calls(self.session)

    async def once(self, record: bool = True) -> None:
        started = time.perf_counter()
        self._login_time = 0.0
        try:
            await defer.Deferred.fromCoroutine(self._once()).addTimeout(self.timeout, self.reactor)
        except Exception as e:
            if self.session is not None and self.kind == SESSION:
                self.session.close()
                self.session = None
            if record:
                self.failures.append(f"{type(e).__name__}: {e}"[:120])
                self.latencies.append(time.perf_counter() - started)
            return
        if record:
            self.latencies.append(time.perf_counter() - started - self._login_time)
            if self.kind == FRESH:
                self.logins.append(self._login_time)

    async def run(self, until: float) -> None:
        next_tick = time.perf_counter()
        while time.perf_counter() < until:
            await self.once()
            next_tick += PERIOD
            wait = next_tick - time.perf_counter()
            if wait > 0:
                await deferLater(self.reactor, wait, lambda: None)
            else:
                next_tick = time.perf_counter()  # a late probe delays the next one, never piles them up

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


# One row: a daemon, maybe an attack, the probe.


async def measure(
    reactor: Any, args: argparse.Namespace, tmp: str, key: str, attack_class: type[Attack] | None, probe_kind: str
) -> dict[str, Any]:
    daemon = Daemon(tmp, key, args)
    row: dict[str, Any] = {"key": key, "attack": attack_class.name if attack_class else "none", "probe": probe_kind}
    attack: Attack | None = None
    probe: Probe | None = None
    try:
        await daemon.start(reactor, args.history_jobs if attack_class and attack_class.needs_history else 0)
        probe = Probe(reactor, daemon, probe_kind, args.call_timeout)
        for _ in range(5):  # warm up, and check that the probe works at all
            await probe.once(record=False)
        if attack_class is not None:
            attack = attack_class(
                Target(reactor, HOST, daemon.port, args.attacker, BOB, ADMIN[0], args)
            )
            await defer.Deferred.fromCoroutine(attack.prepare()).addTimeout(60, reactor)
        before = proc_status(daemon.pid)["VmRSS"]
        peak = [before]

        def sample() -> None:
            if daemon.alive():
                try:
                    peak.append(proc_status(daemon.pid)["VmRSS"])
                except OSError:
                    pass

        sampler = LoopingCall(sample)
        sampler.clock = reactor
        sampler.start(PERIOD)
        cpu = proc_cpu(daemon.pid)
        started = time.perf_counter()
        attacking = defer.Deferred.fromCoroutine(attack.run()) if attack is not None else None
        if attacking is not None:
            attacking.addErrback(lambda f: row.setdefault("attack_error", f.getErrorMessage()))
        await defer.Deferred.fromCoroutine(probe.run(started + args.seconds))
        wall = time.perf_counter() - started
        achieved = attack.summary() if attack is not None else ""
        if attack is not None:
            attack.stop()
        sampler.stop()
        sample()
        alive = daemon.alive()
        row.update(
            probes=len(probe.latencies),
            failed=len(probe.failures),
            first_failure=probe.failures[0] if probe.failures else None,
            p50_ms=percentile(probe.latencies, 0.50) * 1e3,
            p99_ms=percentile(probe.latencies, 0.99) * 1e3,
            max_ms=max(probe.latencies, default=float("nan")) * 1e3,
            login_p50_ms=percentile(probe.logins, 0.50) * 1e3 if probe.logins else None,
            login_p99_ms=percentile(probe.logins, 0.99) * 1e3 if probe.logins else None,
            rss_before_mib=before,
            rss_growth_mib=max(peak) - before,
            daemon_cpu=(proc_cpu(daemon.pid) - cpu) / wall if alive else None,
            daemon_alive=alive,
            achieved=achieved,
        )
        if attacking is not None:
            # Let the attack's loops see that they stopped (their connections are aborted).
            await defer.DeferredList([attacking], consumeErrors=True).addTimeout(5, reactor).addErrback(
                lambda _: None
            )
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {e}"
        if args.verbose:
            traceback.print_exc()
    finally:
        if attack is not None:
            attack.stop()
        if probe is not None:
            probe.close()
        if not daemon.alive() and "error" not in row and not row.get("daemon_alive", True):
            row["error"] = "the daemon died"
        daemon.stop()
    return row


# Report.


def verdict(row: dict[str, Any]) -> str:
    if "error" in row:
        return "ERROR"
    missed = []
    if row["failed"]:
        missed.append("failed probes")
    if not row["p99_ms"] <= TARGET_P99_MS:
        missed.append("p99")
    if not row["rss_growth_mib"] <= TARGET_RSS_MIB:
        missed.append("RSS")
    return "OK" if not missed else "MISSED: " + ", ".join(missed)


def print_row(row: dict[str, Any]) -> None:
    name = row["attack"] if row["attack"] != "none" else "none (baseline)"
    if "error" in row:
        print(f"{name:26} {row['probe']:12} could not be measured: {row['error']}")
        return
    cpu = f"{row['daemon_cpu'] * 100:5.0f}%" if row["daemon_cpu"] is not None else "  dead"
    print(
        f"{name:26} {row['probe']:12} {row['probes']:6} {row['failed']:6} {row['p50_ms']:9.1f} "
        f"{row['p99_ms']:9.1f} {row['rss_growth_mib']:9.1f} {cpu:>6}  {verdict(row)}"
    )
    if row["login_p99_ms"] is not None:
        print(f"{'':40}admin's auth.login (not in the latency): p50 {row['login_p50_ms']:.1f} ms, "
              f"p99 {row['login_p99_ms']:.1f} ms")
    if row["failed"]:
        print(f"{'':40}first failure: {row['first_failure']}")
    if row["achieved"]:
        print(f"{'':40}attack: {row['achieved']}")
    if not row["daemon_alive"]:
        print(f"{'':40}the daemon died during the attack")


def header(args: argparse.Namespace) -> None:
    print(
        f"issue 11 attacks, {args.seconds:g} s each, admin probe every {PERIOD * 1000:.0f} ms "
        f"(timeout {args.call_timeout:g} s), attacker from {args.attacker}"
    )
    print(f"targets: admin p99 <= {TARGET_P99_MS:g} ms, RSS growth <= {TARGET_RSS_MIB:g} MiB, no failed probe")
    print()
    print(
        f"{'attack':26} {'probe':12} {'probes':>6} {'failed':>6} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'RSS +MiB':>9} {'CPU':>6}  verdict"
    )


async def main(reactor: Any, args: argparse.Namespace) -> None:
    # The attacker holds many connections: raise this process's own descriptor limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    chosen = list(ATTACKS) if not args.only else [k.strip() for k in args.only.split(",")]
    unknown = [k for k in chosen if k not in ATTACKS]
    if unknown:
        raise SystemExit(f"unknown attacks {unknown}: choose among {', '.join(ATTACKS)}")
    tmp = tempfile.mkdtemp(prefix="midjobs-hostile-")
    rows = []
    try:
        header(args)
        probes = sorted({ATTACKS[k].probe for k in chosen}, key=[SESSION, FRESH].index)
        for kind in probes:
            row = await measure(reactor, args, tmp, f"baseline-{kind.split()[0]}", None, kind)
            print_row(row)
            rows.append(row)
        for key in chosen:
            row = await measure(reactor, args, tmp, key, ATTACKS[key], ATTACKS[key].probe)
            print_row(row)
            rows.append(row)
    finally:
        if args.keep:
            print(f"daemon logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    for row in rows:
        if row["attack"] != "none":
            print(f"{row['attack']}: finding {ATTACKS[row['key']].finding}")
    print(json.dumps({"seconds": args.seconds, "rows": rows, "verdicts": {r["key"]: verdict(r) for r in rows}}))


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10, help="how long each attack (and baseline) lasts")
    p.add_argument("--only", help=f"a comma-separated list among: {', '.join(ATTACKS)}")
    p.add_argument("--attacker", default="127.0.0.2", help="the attacker's source address (a loopback one)")
    p.add_argument("--call-timeout", type=float, default=5, help="a probe taking longer fails")
    p.add_argument("--daemon-log-level", default="warn")
    p.add_argument("--daemon-nofile", type=int, default=1024, help="the daemon's soft descriptor limit at start")
    p.add_argument("--keep", action="store_true", help="keep the daemons' state directories and logs")
    p.add_argument("--verbose", action="store_true")
    g = p.add_argument_group("attacks")
    g.add_argument("--redos-clients", type=int, default=2, help="connections running the ReDoS filter")
    g.add_argument("--subscriptions", type=int, default=20000, help="core.subscribe pipelined per connection")
    g.add_argument("--subscription-clients", type=int, default=2)
    g.add_argument("--job-clients", type=int, default=4, help="connections running jobs beside the non-reader")
    g.add_argument("--event-bytes", type=int, default=60000, help="the description of those jobs")
    g.add_argument("--flood", type=int, default=1100, help="anonymous WebSockets the flood keeps open")
    g.add_argument("--tricklers", type=int, default=50, help="HTTP connections trickling header lines")
    g.add_argument("--format-width", type=int, default=50_000_000, help="N in the description '{0:>N}'")
    g.add_argument("--tokens", type=int, default=5000, help="tokens generated at most")
    g.add_argument("--token-attrs", type=int, default=60000, help="bytes of attrs per token")
    g.add_argument("--bodies", type=int, default=20, help="connections trickling a 300 MiB body to /")
    g.add_argument("--trickle-bytes", type=int, default=65536, help="bytes each sends every 100 ms")
    g.add_argument("--history-jobs", type=int, default=100_000, help="finished jobs in the store of the scans")
    g.add_argument("--scan-clients", type=int, default=20, help="connections running non-indexed scans")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, arguments)))
