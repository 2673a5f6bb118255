"""
Benchmark of issue 11: what each attack family costs an administrator.

For each family of attacks in bench/hostile_attacks.py, a fresh daemon is
started; the attacker (user C{bob}, no roles, or anonymous, from the source
address C{--attacker}, 127.0.0.2 by default) holds the attack for
C{--seconds} while an administrator from 127.0.0.1 probes the daemon every
100 ms.  Two rows with no attack, measured in the same run, are the baseline.

    .venv/bin/python bench/hostile.py [--seconds 10] [--only redos,logins] [--history-jobs 100000]

Three processes per row: the daemon; the administrator's probe
(bench/hostile_probe.py, its own process and reactor, so that attackers'
clients heavy on the CPU never delay it); and this one, which runs the
attackers' clients and samples the daemon.  Nothing is pinned to a CPU; each
process's CPU share and the whole machine's are printed per row, so a reader
sees when the cores were saturated.

A probe is C{core.ping}, a trivial job (C{core.job_test}, answered when it
ends) and an indexed C{core.get_jobs} (by id) on a logged-in connection kept
open (C{session}), or, for the attacks on connections and logins, the same on
a new connection that first logs in with the admin's password (C{fresh
login}: its latency counts the connection and the calls but not the
C{auth.login}, whose password check costs a deliberate key derivation; the
login's own p50/p99 are shown beside it, and a refused login fails the
probe).  A probe that fails or takes longer than C{--call-timeout} counts as
failed.  Reported per attack: probes made and failed, the probes' p50 and p99
latency, the daemon's RSS growth over the window (its peak RSS, the kernel's
high-water mark reset at the window's start and samples every 100 ms, minus
its RSS just before the attack), the CPU shares, and what the attack
achieved.  An attack with a control (the subscriber that never reads) is
followed by a row of the same load without the fault, and by the difference.
Targets: p99 <= 50 ms, RSS growth <= 64 MiB, no failed probe.  One JSON line
with every figure ends the output.  See bench/README.md.
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
from twisted.internet.task import LoopingCall, react  # noqa: E402

from hostile_attacks import ATTACKS, FRESH, SESSION, Attack, Target  # noqa: E402
from hostile_probe import FRESH_KIND, SESSION_KIND, ProbeProcess  # noqa: E402
from jobs import proc_cpu  # noqa: E402  (bench/jobs.py)
from procstats import free_port, proc_status, system_busy  # noqa: E402
from servers import HOST, Server  # noqa: E402

ADMIN = ("admin", "admin-password-not-secret")
BOB = ("bob", "bob-password-not-secret")
TARGET_P99_MS = 50.0
TARGET_RSS_MIB = 64.0
#: The probe's period.
PERIOD = 0.1
#: The probe process's --kind for each kind of row.
PROBE_KINDS = {SESSION: SESSION_KIND, FRESH: FRESH_KIND}
#: A row whose machine-wide CPU reaches this share of all cores ran on a saturated machine.
SATURATED = 0.9
#: A probe process whose timer fires later than this (p99, ms) waited for a CPU.
PROBE_LAG_MS = 5.0
#: Finished jobs the daemon keeps in memory ([jobs] keep_finished, its default).
KEPT_JOBS = 1000
CONFIG = f"[jobs]\nkeep_records = 1000000\nkeep_days = 3650\nkeep_finished = {KEPT_JOBS}\n"


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


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


# What the processes cost: the daemon's memory, everyone's CPU.


class PeakRSS:
    """
    The daemon's peak RSS over a window: the kernel's high-water mark
    (C{VmHWM}, reset at the window's start through C{/proc/PID/clear_refs}),
    and samples every L{PERIOD} where that reset is not allowed.
    """

    def __init__(self, reactor: Any, daemon: Daemon) -> None:
        self.daemon = daemon
        self.before = proc_status(daemon.pid)["VmRSS"]
        self.samples = [self.before]
        try:
            with open(f"/proc/{daemon.pid}/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
            self.high_water_mark = True
        except OSError:
            self.high_water_mark = False
        self._sampler = LoopingCall(self.sample)
        self._sampler.clock = reactor
        self._sampler.start(PERIOD)

    def sample(self) -> None:
        if self.daemon.alive():
            try:
                status = proc_status(self.daemon.pid)
            except OSError:
                return
            self.samples.append(status["VmRSS"])
            if self.high_water_mark:
                self.samples.append(status["VmHWM"])

    def stop(self) -> float:
        """
        Stop sampling; the growth in MiB (the peak minus the RSS at the start).
        """
        if self._sampler.running:
            self._sampler.stop()
        self.sample()
        return max(self.samples) - self.before


class CPUShares:
    """
    The CPU each process used over a window, as a share of one core: the
    daemon, this process (the attacker's clients, and this script's sampling),
    and the whole machine (everyone's, other users' included).
    """

    def __init__(self, daemon_pid: int) -> None:
        self.daemon_pid = daemon_pid
        self.started = time.perf_counter()
        self.daemon = proc_cpu(daemon_pid)
        self.attacker = proc_cpu(os.getpid())
        self.machine = system_busy()

    def shares(self, daemon_alive: bool) -> dict[str, float | None]:
        wall = time.perf_counter() - self.started
        return {
            "daemon_cpu": (proc_cpu(self.daemon_pid) - self.daemon) / wall if daemon_alive else None,
            "attacker_cpu": (proc_cpu(os.getpid()) - self.attacker) / wall,
            "machine_cpu": (system_busy() - self.machine) / wall,
        }


# One row: a daemon, maybe an attack, the probe.


async def measure(
    reactor: Any, args: argparse.Namespace, tmp: str, key: str, attack_class: type[Attack] | None, probe_kind: str
) -> dict[str, Any]:
    daemon = Daemon(tmp, key, args)
    row: dict[str, Any] = {"key": key, "attack": attack_class.name if attack_class else "none", "probe": probe_kind}
    if attack_class is not None and attack_class.control_for:
        row["control_for"] = attack_class.control_for
    attack: Attack | None = None
    probe: ProbeProcess | None = None
    try:
        await daemon.start(reactor, args.history_jobs if attack_class and attack_class.needs_history else 0)
        # The admin's probe runs in its own process: the attacker's clients
        # below may keep this one's reactor busy, never the probe's.
        probe = ProbeProcess(reactor, os.path.join(daemon.dir, "probe.log"))
        probe.start(
            f"ws://{HOST}:{daemon.port}/api/current", ADMIN, PROBE_KINDS[probe_kind],
            args.seconds, PERIOD, args.call_timeout,
        )  # fmt: skip
        await probe.ready.addTimeout(120, reactor)
        row["probe_pid"] = probe.pid
        if attack_class is not None:
            attack = attack_class(
                Target(reactor, HOST, daemon.port, args.attacker, BOB, ADMIN[0], args)
            )
            await defer.Deferred.fromCoroutine(attack.prepare()).addTimeout(60, reactor)
        rss = PeakRSS(reactor, daemon)
        cpu = CPUShares(daemon.pid)
        attacking = defer.Deferred.fromCoroutine(attack.run()) if attack is not None else None
        if attacking is not None:
            attacking.addErrback(lambda f: row.setdefault("attack_error", f.getErrorMessage()))
        probe.go()
        figures = await probe.result.addTimeout(args.seconds + args.call_timeout + 60, reactor)
        growth = rss.stop()
        alive = daemon.alive()
        shares = cpu.shares(alive)
        if attack is not None:
            await defer.Deferred.fromCoroutine(attack.settle()).addTimeout(10, reactor)
        achieved = attack.summary() if attack is not None else ""
        if attack is not None:
            attack.stop()
        latencies, logins, failures = figures["latencies"], figures["logins"], figures["failures"]
        row.update(
            probes=len(latencies),
            failed=len(failures),
            first_failure=failures[0] if failures else None,
            p50_ms=percentile(latencies, 0.50) * 1e3,
            p99_ms=percentile(latencies, 0.99) * 1e3,
            max_ms=max(latencies, default=float("nan")) * 1e3,
            login_p50_ms=percentile(logins, 0.50) * 1e3 if logins else None,
            login_p99_ms=percentile(logins, 0.99) * 1e3 if logins else None,
            probe_lag_p99_ms=percentile(figures["lags"], 0.99) * 1e3 if figures["lags"] else None,
            probe_lag_max_ms=max(figures["lags"]) * 1e3 if figures["lags"] else None,
            rss_before_mib=rss.before,
            rss_growth_mib=growth,
            rss_peak_from=("VmHWM and samples" if rss.high_water_mark else "samples"),
            **shares,
            probe_cpu=figures["cpu"] / figures["wall"],
            cores=os.cpu_count(),
            daemon_alive=alive,
            achieved=achieved,
        )
        if attack is not None:
            row["attack_figures"] = attack.figures()
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
            await probe.stop()
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


def saturated(row: dict[str, Any]) -> bool:
    """
    Whether the machine's cores were nearly all busy during the row: then
    the daemon, the attacker and the probe waited for each other's CPU.
    """
    return row["machine_cpu"] >= SATURATED * row["cores"]


def _share(value: float | None) -> str:
    return f"{value * 100:4.0f}%" if value is not None else " dead"


def print_row(row: dict[str, Any]) -> None:
    name = row["attack"] if row["attack"] != "none" else "none (baseline)"
    if "error" in row:
        print(f"{name:26} {row['probe']:12} could not be measured: {row['error']}")
        return
    print(
        f"{name:26} {row['probe']:12} {row['probes']:6} {row['failed']:6} {row['p50_ms']:9.1f} "
        f"{row['p99_ms']:9.1f} {row['rss_growth_mib']:9.1f} {_share(row['daemon_cpu']):>6} "
        f"{_share(row['attacker_cpu']):>5} {_share(row['probe_cpu']):>5} {_share(row['machine_cpu']):>5}  "
        f"{verdict(row)}"
    )
    if row["login_p99_ms"] is not None:
        print(f"{'':40}admin's auth.login (not in the latency): p50 {row['login_p50_ms']:.1f} ms, "
              f"p99 {row['login_p99_ms']:.1f} ms")
    if row["failed"]:
        print(f"{'':40}first failure: {row['first_failure']}")
    if row["achieved"]:
        print(f"{'':40}attack: {row['achieved']}")
    if row["probe_lag_p99_ms"] is not None and row["probe_lag_p99_ms"] > PROBE_LAG_MS:
        print(
            f"{'':40}the probe's own timer fired late (p99 {row['probe_lag_p99_ms']:.1f} ms, max "
            f"{row['probe_lag_max_ms']:.1f} ms): the probe's process waited for a CPU too"
        )
    if saturated(row):
        others = row["machine_cpu"] - sum(row[k] or 0 for k in ("daemon_cpu", "attacker_cpu", "probe_cpu"))
        print(
            f"{'':40}the machine was saturated ({row['machine_cpu'] * 100:.0f}% of {row['cores'] * 100}%, "
            f"other processes {max(0.0, others) * 100:.0f}%): the latency is not the daemon's alone"
        )
    if not row["daemon_alive"]:
        print(f"{'':40}the daemon died during the attack")


def print_control(attack: dict[str, Any], control: dict[str, Any]) -> None:
    """
    What the attack's row holds beyond its control's (the same load, without
    the fault).  The jobs' own memory grows with the jobs kept (up to
    L{KEPT_JOBS}): the two rows compare only once both have run that many.
    """
    if "error" in attack or "error" in control:
        return
    attack["rss_over_control_mib"] = attack["rss_growth_mib"] - control["rss_growth_mib"]
    jobs = (attack["attack_figures"]["calls"], control["attack_figures"]["calls"])
    attack["control_comparable"] = min(jobs) >= KEPT_JOBS
    print(
        f"{'':40}{attack['attack']} minus its control: RSS {attack['rss_over_control_mib']:+.1f} MiB "
        f"({attack['rss_growth_mib']:.1f} - {control['rss_growth_mib']:.1f}), "
        f"p99 {attack['p99_ms'] - control['p99_ms']:+.1f} ms"
    )
    if attack["control_comparable"]:
        print(f"{'':40}(both rows ran at least the {KEPT_JOBS:,} jobs the daemon keeps: {jobs[0]:,} and {jobs[1]:,})")
    else:
        print(
            f"{'':40}NOT COMPARABLE: {jobs[0]:,} and {jobs[1]:,} jobs run, the daemon keeps {KEPT_JOBS:,}, so the "
            f"jobs' own memory differs (run longer, or on a quieter machine)"
        )


def header(args: argparse.Namespace) -> None:
    print(
        f"issue 11 attacks, {args.seconds:g} s each, admin probe every {PERIOD * 1000:.0f} ms "
        f"(timeout {args.call_timeout:g} s, in its own process), attacker from {args.attacker}"
    )
    print(f"targets: admin p99 <= {TARGET_P99_MS:g} ms, RSS growth <= {TARGET_RSS_MIB:g} MiB, no failed probe")
    print(
        f"CPU shares in % of one core ({os.cpu_count()} cores): the daemon (CPU), the attacker's process (atk), "
        f"the probe's (prb), the whole machine (all)"
    )
    print()
    print(
        f"{'attack':26} {'probe':12} {'probes':>6} {'failed':>6} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'RSS +MiB':>9} {'CPU':>6} {'atk':>5} {'prb':>5} {'all':>5}  verdict"
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
            attack_class = ATTACKS[key]
            row = await measure(reactor, args, tmp, key, attack_class, attack_class.probe)
            print_row(row)
            rows.append(row)
            if attack_class.control is not None:
                # The same load without the fault, measured next: what the fault adds.
                control = await measure(reactor, args, tmp, f"{key}-control", attack_class.control, attack_class.probe)
                print_row(control)
                print_control(row, control)
                rows.append(control)
    finally:
        if args.keep:
            print(f"daemon logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    for row in rows:
        if row["key"] in ATTACKS:
            print(f"{row['attack']}: finding {ATTACKS[row['key']].finding}")
        elif "control_for" in row:
            print(f"{row['attack']}: {ATTACKS[row['control_for']].control.finding}")  # type: ignore[union-attr]
    print(
        json.dumps(
            {
                "seconds": args.seconds,
                "cores": os.cpu_count(),
                "rows": rows,
                "verdicts": {r["key"]: verdict(r) for r in rows},
            }
        )
    )


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
