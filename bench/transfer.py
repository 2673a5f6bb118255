"""
Benchmark of the HTTP transfers: C{/_upload} and C{/_download} against a bare Twisted server.

    /work/venv/bin/python bench/transfer.py [--size 1G] [--repeat 3] [--pin] [--only upload|download]

In one run on 127.0.0.1, with curl as the client for both servers:

  - upload: C{curl -F data=... -F file=@<size-byte file>} through C{POST
    /_upload} into C{bench_transfer.sink}, a job that reads its input pipe to
    the end (C{bench/transfer_services.py}), beside the same curl command
    against C{bench/transfer_baseline.py}, whose request drops the body as it
    arrives;
  - download: C{curl -o /dev/null} of C{GET /_download/...} from
    C{bench_transfer.source(size)}, a job that writes its output pipe (the URL
    comes from C{core.download}), beside a C{GET} of the same number of bytes
    from the baseline, which writes them with a push producer.

The daemon is a subprocess (C{python -m twisted midjobs ... --plugin
transfer_services}); so is the baseline.  Each measurement is repeated
C{--repeat} times, baseline and daemon alternating, after one small untimed
warm-up transfer of each kind.  Reported: MB/s (10^6 bytes of the file per
second of wall time around curl), the median over the repeats, the ratio
daemon/baseline (target: >= 0.80 in each direction); the CPU the server and
curl used; the server's RSS just before each transfer and its peak during it
(VmHWM reset through C{/proc/<pid>/clear_refs}, and VmRSS polled every 50 ms),
whose difference is the growth (target: <= 32 MiB for the daemon, whatever
the size).  A table, then one JSON line with every figure.  See bench/README.md.

Before each timed transfer it waits (up to C{--quiet-timeout}) for the rest of
the machine to go quiet.  C{--pin} runs curl on the first CPU and both servers
on the last.  C{--profile FILE} runs the daemon under cProfile (slower: not for
the figures) and prints its top functions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from servers import HOST, Server  # noqa: E402  (bench/servers.py)
from procstats import free_port, print_profile, proc_status, system_busy  # noqa: E402  (bench/procstats.py)

from twisted.internet import threads
from twisted.internet.task import LoopingCall, deferLater, react

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
USERNAME = "bench"
PASSWORD = "bench-password-not-secret"

MiB = 1024 * 1024
#: The block the upload file is made of (random, repeated).
BLOCK = MiB
#: The size of the untimed warm-up transfers.
WARMUP_SIZE = 32 * MiB
#: How often the server's RSS is polled during a transfer, in seconds.
SAMPLE_INTERVAL = 0.05
#: Pause after each transfer, so that the next one starts from a quiet server.
SETTLE = 0.3

#: Targets.
MIN_RATIO = 0.80
MAX_GROWTH_MIB = 32.0
#: Other processes using more than this share of a core make the rates unreliable.
BUSY_MACHINE = 0.25
#: Before each transfer, wait (up to --quiet-timeout) until other processes
#: use less than this share of a core, over this many seconds.
QUIET = 0.10
QUIET_WINDOW = 0.5

#: What curl prints after each transfer (-w).
CURL_FORMAT = "%{http_code} %{size_upload} %{size_download} %{speed_upload} %{speed_download} %{time_total}\n"
SINK_DATA = json.dumps({"method": "bench_transfer.sink", "params": []})


# Sizes.


def parse_size(text: str) -> int:
    """
    C{1G}, C{4G}, C{256M}, C{512K}, C{1GiB} or a number of bytes.
    """
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 4G, 256M)")
    number, unit = int(match.group(1)), match.group(2).lower()
    size = number * 1024 ** " kmgt".index(unit or " ")
    if size < 1:
        raise argparse.ArgumentTypeError("the size must be at least 1 byte")
    return size


def human(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def make_file(path: str, size: int) -> None:
    """
    C{size} bytes of one random 1 MiB block, repeated.
    """
    block = os.urandom(BLOCK)
    with open(path, "wb") as f:
        left = size
        while left >= BLOCK:
            f.write(block)
            left -= BLOCK
        f.write(block[:left])


# Processes.


def reset_peak(pid: int) -> bool:
    """
    Reset the VmHWM of C{pid} to its current RSS (Linux >= 4.0); whether that worked.
    """
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> tuple[float, float, int]:
    """
    CPU seconds in user and system mode C{pid} has used so far, and its minor page faults.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS, int(fields[7])


class RssSampler:
    """
    The RSS of a process just before a transfer and its peak during it.

    The peak is the larger of the VmRSS polled every L{SAMPLE_INTERVAL} and
    the VmHWM at the end, when VmHWM could be reset at the start.
    """

    def __init__(self, reactor: Any, pid: int) -> None:
        self.reactor = reactor
        self.pid = pid
        self.loop: LoopingCall | None = None
        self.before = self.peak = 0.0
        self.samples = 0
        self.hwm_reset = False

    def start(self) -> None:
        self.hwm_reset = reset_peak(self.pid)
        self.before = self.peak = proc_status(self.pid)["VmRSS"]
        self.samples = 0
        self.loop = LoopingCall(self._sample)
        self.loop.clock = self.reactor
        self.loop.start(SAMPLE_INTERVAL, now=False)

    def _sample(self) -> None:
        self.samples += 1
        self.peak = max(self.peak, proc_status(self.pid)["VmRSS"])

    def stop(self) -> dict[str, Any]:
        assert self.loop is not None
        self.loop.stop()
        status = proc_status(self.pid)
        self.peak = max(self.peak, status["VmRSS"])
        if self.hwm_reset:
            self.peak = max(self.peak, status["VmHWM"])
        return {
            "rss_before": self.before,
            "rss_peak": self.peak,
            "growth": self.peak - self.before,
            "rss_samples": self.samples,
            "hwm_reset": self.hwm_reset,
        }


# One transfer.


def pin(pid: int, cpus: set[int]) -> None:
    """
    Run every thread of process C{pid} on C{cpus} only.
    """
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass  # a thread that just ended


def run_curl(argv: list[str], out_path: str, err_path: str, cpus: set[int] | None) -> dict[str, Any]:
    """
    Run curl to its end (in a worker thread), on C{cpus} if given: wall
    time, its CPU, and what its -w printed.
    """
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        if cpus is not None:
            try:
                os.sched_setaffinity(proc.pid, cpus)
            except OSError:
                pass  # curl already ended
        _, status, usage = os.wait4(proc.pid, 0)
        t1 = time.perf_counter()
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(out_path) as f:
        written = f.read().split()
    with open(err_path, errors="replace") as f:
        errors = f.read().strip()
    if proc.returncode != 0 or len(written) != 6:
        raise RuntimeError(f"curl exited with {proc.returncode}: {errors or written}")
    code, size_up, size_down, speed_up, speed_down, total = written
    return {
        "wall_s": t1 - t0,
        "curl_cpu_s": usage.ru_utime + usage.ru_stime,
        "http_code": int(code),
        "size_upload": int(float(size_up)),
        "size_download": int(float(size_down)),
        "curl_speed_upload": float(speed_up),
        "curl_speed_download": float(speed_down),
        "curl_time_s": float(total),
    }


async def timed_curl(
    server: Server, argv: list[str], tmp: str, size: int, cpus: set[int] | None
) -> dict[str, Any]:
    """
    Run curl, which moves C{size} bytes; measure the server's CPU and the machine's around it.
    """
    (user0, sys0, faults0), busy0, own0 = proc_cpu(server.pid), system_busy(), time.process_time()
    result = await threads.deferToThread(
        run_curl, argv, os.path.join(tmp, "curl.out"), os.path.join(tmp, "curl.err"), cpus
    )
    (user1, sys1, faults1), busy1, own1 = proc_cpu(server.pid), system_busy(), time.process_time()
    wall = result["wall_s"]
    cpu0, cpu1 = user0 + sys0, user1 + sys1
    result["server_cpu_s"] = cpu1 - cpu0
    result["server_user_share"] = (user1 - user0) / (cpu1 - cpu0) if cpu1 > cpu0 else 0.0
    result["server_faults_per_gib"] = (faults1 - faults0) / (size / (1 << 30))
    result["server_cpu"] = (cpu1 - cpu0) / wall
    result["server_cpu_s_per_gib"] = (cpu1 - cpu0) / (size / (1 << 30))
    result["curl_cpu"] = result["curl_cpu_s"] / wall
    others = (busy1 - busy0) - (cpu1 - cpu0) - result["curl_cpu_s"] - (own1 - own0)
    result["other_cpu"] = max(0.0, others) / wall
    return result


class Bench:
    """
    The two servers and what it takes to call them.
    """

    def __init__(self, reactor: Any, args: argparse.Namespace, tmp: str) -> None:
        self.reactor = reactor
        self.args = args
        self.tmp = tmp
        self.daemon: Server | None = None
        self.baseline: Server | None = None
        self.daemon_port = self.baseline_port = 0
        self.client: Any = None
        self.daemon_idle_rss = 0.0
        self.baseline_idle_rss = 0.0
        #: With --pin: the CPUs of curl, and of the servers.
        self.curl_cpus: set[int] | None = None
        self.server_cpus: set[int] | None = None
        if args.pin:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) >= 2:
                self.curl_cpus, self.server_cpus = {cpus[0]}, {cpus[-1]}

    # Starting and stopping.

    async def start(self) -> None:
        from midjobs.client import connect

        self.baseline_port = free_port()
        self.baseline = Server(
            "baseline server",
            [
                sys.executable, os.path.join(BENCH_DIR, "transfer_baseline.py"),
                "--port", str(self.baseline_port), "--interface", HOST,
            ],  # fmt: skip
            os.path.join(self.tmp, "baseline.log"),
        )
        self.daemon_port = free_port()
        state_dir = os.path.join(self.tmp, "state")
        sock = os.path.join(self.tmp, "s.sock")
        if self.args.profile:
            argv = [sys.executable, os.path.join(BENCH_DIR, "twist_profiled.py"), self.args.profile]
        else:
            argv = [sys.executable, "-m", "twisted"]
        argv += [
            "--log-format=text", f"--log-level={self.args.daemon_log_level}", "midjobs",
            "--state-dir", state_dir,
            "--listen", f"tcp:{self.daemon_port}:interface={HOST}",
            "--socket", sock,
            "--plugin", "transfer_services",
        ]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (BENCH_DIR, env.get("PYTHONPATH")) if p)
        self.daemon = Server("midjobs daemon", argv, os.path.join(self.tmp, "daemon.log"), env=env)

        await self.baseline.wait_listening(self.reactor, self.baseline_port)
        await self.daemon.wait_listening(self.reactor, self.daemon_port, (sock,))
        self.baseline_idle_rss = proc_status(self.baseline.pid)["VmRSS"]
        self.daemon_idle_rss = proc_status(self.daemon.pid)["VmRSS"]
        if self.server_cpus is not None:
            pin(self.baseline.pid, self.server_cpus)
            pin(self.daemon.pid, self.server_cpus)

        # A FULL_ADMIN user, made over the UNIX socket (root there is trusted without login).
        admin = await connect(f"ws+unix://{sock}", reactor=self.reactor, call_timeout=60)
        try:
            await admin.call("user.create", {"username": USERNAME, "password": PASSWORD, "roles": ["FULL_ADMIN"]})
        finally:
            await admin.close()
        # The user's connection over TCP: tokens for the uploads, core.download, the jobs' results.
        url = f"ws://{HOST}:{self.daemon_port}/api/current"
        self.client = await connect(url, reactor=self.reactor, call_timeout=60)
        if not await self.client.login(USERNAME, PASSWORD):
            raise RuntimeError(f"cannot log in as {USERNAME} over TCP")

    async def close_client(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            try:
                await client.close()
            except Exception:
                pass

    def stop_servers(self) -> None:
        for server in (self.daemon, self.baseline):
            if server is not None:
                server.stop()

    # The daemon's jobs.

    async def job_result(self, job_id: int, timeout: float = 120) -> Any:
        """
        Wait for job C{job_id} to end; its result, or an error if it did not succeed.
        """
        deadline = time.monotonic() + timeout
        while True:
            record = await self.client.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
            state = record["state"]
            if state == "SUCCESS":
                return record["result"]
            if state in ("FAILED", "ABORTED"):
                raise RuntimeError(f"job {job_id} ({record['method']}) {state}: {record['error']}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} still {state} after {timeout}s")
            await deferLater(self.reactor, 0.05, lambda: None)

    # The transfers.

    def _upload_argv(self, url: str, token: str, path: str) -> list[str]:
        return [
            "curl", "-sS", "-o", os.path.join(self.tmp, "answer.json"), "-w", CURL_FORMAT,
            "-H", f"Authorization: Token {token}",
            "-F", f"data={SINK_DATA}",
            "-F", f"file=@{path};type=application/octet-stream",
            url,
        ]  # fmt: skip

    def _download_argv(self, url: str) -> list[str]:
        return ["curl", "-sS", "-o", "/dev/null", "-w", CURL_FORMAT, url]

    def _answer(self) -> Any:
        with open(os.path.join(self.tmp, "answer.json")) as f:
            text = f.read()
        try:
            return json.loads(text)
        except ValueError:
            raise RuntimeError(f"the upload was answered {text!r}") from None

    async def upload(self, which: str, path: str, size: int) -> dict[str, Any]:
        if which == "daemon":
            assert self.daemon is not None
            server = self.daemon
            token = await self.client.call("auth.generate_token", 600)
            url = f"http://{HOST}:{self.daemon_port}/_upload"
        else:
            assert self.baseline is not None
            server = self.baseline
            # The same header as for the daemon (the baseline ignores it).
            token = "x" * 43
            url = f"http://{HOST}:{self.baseline_port}/_upload"
        sampler = RssSampler(self.reactor, server.pid)
        sampler.start()
        try:
            result = await timed_curl(server, self._upload_argv(url, token, path), self.tmp, size, self.curl_cpus)
        finally:
            memory = sampler.stop()
        result.update(memory)
        if result["http_code"] != 200:
            raise RuntimeError(f"{server.name}: the upload was answered {result['http_code']}: {self._answer()}")
        answer = self._answer()
        if which == "daemon":
            read = await self.job_result(answer["job_id"])
            if read != size:
                raise RuntimeError(f"the sink job read {read} bytes of {size}")
        elif answer.get("bytes") != result["size_upload"]:
            raise RuntimeError(f"the baseline received {answer.get('bytes')} bytes, curl sent {result['size_upload']}")
        result["mb_s"] = size / result["wall_s"] / 1e6
        return result

    async def download(self, which: str, size: int) -> dict[str, Any]:
        job_id = None
        if which == "daemon":
            assert self.daemon is not None
            server = self.daemon
        else:
            assert self.baseline is not None
            server = self.baseline
        # For the daemon, the job's start (core.download) counts in its RSS growth.
        sampler = RssSampler(self.reactor, server.pid)
        sampler.start()
        try:
            if which == "daemon":
                job_id, path = await self.client.call("core.download", "bench_transfer.source", [size], "bench.bin")
                url = f"http://{HOST}:{self.daemon_port}{path}"
                # Let the job start and fill its pipe before the clock starts.
                await deferLater(self.reactor, 0.2, lambda: None)
            else:
                url = f"http://{HOST}:{self.baseline_port}/download?size={size}"
            result = await timed_curl(server, self._download_argv(url), self.tmp, size, self.curl_cpus)
        finally:
            memory = sampler.stop()
        result.update(memory)
        if result["http_code"] != 200 or result["size_download"] != size:
            raise RuntimeError(
                f"{server.name}: the download was answered {result['http_code']} "
                f"with {result['size_download']} bytes of {size}"
            )
        if job_id is not None:
            written = await self.job_result(job_id)
            if written != size:
                raise RuntimeError(f"the source job wrote {written} bytes of {size}")
        result["mb_s"] = size / result["wall_s"] / 1e6
        return result

    async def settle(self) -> None:
        await deferLater(self.reactor, SETTLE, lambda: None)

    async def wait_quiet(self) -> tuple[float, float]:
        """
        Wait until the rest of the machine has used less than L{QUIET} of a
        core over L{QUIET_WINDOW} seconds, for at most C{--quiet-timeout}
        seconds; how long that took, and the share of a core the rest used
        in the last window.  On a small machine, the figures of a
        transfer that shares the CPUs with other work mean little.
        """
        assert self.daemon is not None and self.baseline is not None
        start = time.monotonic()
        pids = (self.daemon.pid, self.baseline.pid)
        while True:
            cpu0, busy0, own0 = sum(sum(proc_cpu(p)[:2]) for p in pids), system_busy(), time.process_time()
            t0 = time.monotonic()
            await deferLater(self.reactor, QUIET_WINDOW, lambda: None)
            cpu1, busy1, own1 = sum(sum(proc_cpu(p)[:2]) for p in pids), system_busy(), time.process_time()
            others = ((busy1 - busy0) - (cpu1 - cpu0) - (own1 - own0)) / (time.monotonic() - t0)
            waited = time.monotonic() - start
            if others < QUIET or waited >= self.args.quiet_timeout:
                return waited, max(0.0, others)


# Report.


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {
        "mb_s": median("mb_s"),
        "runs_mb_s": [r["mb_s"] for r in runs],
        "wall_s": median("wall_s"),
        "curl_time_s": median("curl_time_s"),
        "server_cpu": median("server_cpu"),
        "server_cpu_s": median("server_cpu_s"),
        "server_cpu_s_per_gib": median("server_cpu_s_per_gib"),
        "server_user_share": median("server_user_share"),
        "server_faults_per_gib": median("server_faults_per_gib"),
        "curl_cpu": median("curl_cpu"),
        "other_cpu": median("other_cpu"),
        "rss_before": median("rss_before"),
        "rss_peak": median("rss_peak"),
        "growth": median("growth"),
        "growth_max": max(r["growth"] for r in runs),
        "peak_max": max(r["rss_peak"] for r in runs),
        "hwm_reset": all(r["hwm_reset"] for r in runs),
    }


def report(
    args: argparse.Namespace,
    bench: Bench,
    results: dict[str, dict[str, list[dict[str, Any]]]],
    end: dict[str, dict[str, float]],
    warmup: dict[str, float],
) -> dict[str, Any]:
    size = args.size
    cpus = os.cpu_count() or 1
    summary = {d: {w: summarize(runs) for w, runs in by_server.items()} for d, by_server in results.items()}
    ratios = {d: s["daemon"]["mb_s"] / s["bare"]["mb_s"] for d, s in summary.items()}
    # Bare server CPU per byte over the daemon's: what the MB/s ratio becomes when both servers are CPU-bound.
    cpu_ratios = {
        d: s["bare"]["server_cpu_s_per_gib"] / s["daemon"]["server_cpu_s_per_gib"] for d, s in summary.items()
    }
    growth_max = max(s["daemon"]["growth_max"] for s in summary.values())

    pinned = ""
    if bench.curl_cpus and bench.server_cpus:
        pinned = f", curl on CPU {min(bench.curl_cpus)} and the servers on CPU {min(bench.server_cpus)}"
    print(
        f"midjobs transfer benchmark: {human(size)} ({size} bytes) per transfer, median of {args.repeat}, "
        f"{HOST}, curl as the client, {cpus} CPUs"
        + pinned
    )
    print()
    print(
        f"{'':22}{'MB/s':>8}  {'each run (MB/s)':<20}{'server CPU':>11}{'s/GiB':>7}{'curl CPU':>9}{'others':>8}"
        f"{'RSS before':>11}{'peak':>8}{'growth':>8}{'max':>7}"
    )
    names = {"bare": "bare Twisted", "daemon": "midjobs daemon"}
    for direction in ("upload", "download"):
        for which in ("bare", "daemon"):
            s = summary[direction][which]
            runs = " ".join(f"{v:.0f}" for v in s["runs_mb_s"])
            print(
                f"{direction:9}{names[which]:13}{s['mb_s']:>8.0f}  {runs:<20}{s['server_cpu']:>11.0%}"
                f"{s['server_cpu_s_per_gib']:>7.2f}{s['curl_cpu']:>9.0%}"
                f"{s['other_cpu']:>8.0%}{s['rss_before']:>11.1f}{s['rss_peak']:>8.1f}"
                f"{s['growth']:>+8.1f}{s['growth_max']:>+7.1f}"
            )
        ok = ratios[direction] >= MIN_RATIO
        print(
            f"{'':9}ratio daemon/bare: {ratios[direction]:.3f}   target >= {MIN_RATIO:.2f}: {'OK' if ok else 'MISSED'}"
            f"   (server CPU per byte, bare/daemon: {cpu_ratios[direction]:.3f})"
        )
    print("(MB/s: 10^6 bytes of the file per second of wall time around curl; CPU: share of one core during")
    print(" the transfer, and server CPU seconds per GiB moved; others: every other process on the machine;")
    print(" RSS in MiB: just before the transfer, its peak during it, their difference (median) and the")
    print(" largest difference over the runs)")
    print()
    print(
        f"daemon RSS growth during a transfer, largest over all runs: {growth_max:+.1f} MiB; "
        f"target <= {MAX_GROWTH_MIB:.0f} MiB: {'OK' if growth_max <= MAX_GROWTH_MIB else 'MISSED'}"
    )
    print(
        f"daemon RSS growth during the first (warm-up, {human(WARMUP_SIZE)}) upload: "
        f"{warmup['upload_daemon_rss_growth_mib']:+.1f} MiB, "
        f"download: {warmup['download_daemon_rss_growth_mib']:+.1f} MiB"
    )
    print(
        f"daemon RSS: idle {bench.daemon_idle_rss:.1f} MiB, at the end {end['daemon']['VmRSS']:.1f} MiB, "
        f"peak over the whole run (VmHWM) {end['daemon']['VmHWM']:.1f} MiB"
    )
    print(
        f"baseline RSS: idle {bench.baseline_idle_rss:.1f} MiB, at the end {end['baseline']['VmRSS']:.1f} MiB, "
        f"peak over the whole run (VmHWM) {end['baseline']['VmHWM']:.1f} MiB"
    )
    if not all(s[w]["hwm_reset"] for s in summary.values() for w in s):
        print("NOTE: VmHWM could not be reset: peaks are from polling VmRSS every 50 ms only")
    for direction in ("upload", "download"):
        for which in ("bare", "daemon"):
            s = summary[direction][which]
            if s["other_cpu"] >= BUSY_MACHINE:
                print(
                    f"WARNING: other processes used {s['other_cpu']:.0%} of a core during the {direction} "
                    f"to the {names[which]} ({cpus} CPUs): MB/s are depressed and noisy"
                )
    all_runs = [r for by_server in results.values() for runs in by_server.values() for r in runs]
    waited = sum(r["waited_quiet_s"] for r in all_runs)
    busy_starts = sum(1 for r in all_runs if r["other_cpu_before"] >= QUIET)
    if waited > len(all_runs) * QUIET_WINDOW * 1.5:
        print(f"NOTE: waited {waited:.0f} s in all for other processes to go quiet before the transfers")
    if busy_starts:
        print(
            f"WARNING: {busy_starts} of {len(all_runs)} transfers started while other processes used "
            f">= {QUIET:.0%} of a core (after waiting up to --quiet-timeout {args.quiet_timeout:g} s)"
        )
    if args.profile:
        print("NOTE: the daemon ran under cProfile; its figures are not representative")
    if args.daemon_log_level != "info":
        print(f"NOTE: the daemon ran with --log-level={args.daemon_log_level}")

    figures: dict[str, Any] = {
        "size_bytes": size,
        "repeat": args.repeat,
        "cpus": cpus,
        "pinned": bool(args.pin),
        "daemon_log_level": args.daemon_log_level,
    }
    for direction in ("upload", "download"):
        for which in ("bare", "daemon"):
            s = summary[direction][which]
            key = f"{direction}_{which}"
            figures[f"{key}_mb_s"] = round(s["mb_s"], 1)
            figures[f"{key}_runs_mb_s"] = [round(v, 1) for v in s["runs_mb_s"]]
            figures[f"{key}_wall_s"] = round(s["wall_s"], 3)
            figures[f"{key}_curl_time_s"] = round(s["curl_time_s"], 3)
            figures[f"{key}_server_cpu"] = round(s["server_cpu"], 3)
            figures[f"{key}_server_cpu_s_per_gib"] = round(s["server_cpu_s_per_gib"], 3)
            figures[f"{key}_server_user_share"] = round(s["server_user_share"], 3)
            figures[f"{key}_curl_cpu"] = round(s["curl_cpu"], 3)
            figures[f"{key}_other_cpu"] = round(s["other_cpu"], 3)
            figures[f"{key}_rss_before_mib"] = round(s["rss_before"], 1)
            figures[f"{key}_rss_peak_mib"] = round(s["rss_peak"], 1)
            figures[f"{key}_rss_growth_mib"] = round(s["growth"], 1)
            figures[f"{key}_rss_growth_max_mib"] = round(s["growth_max"], 1)
        figures[f"{direction}_ratio"] = round(ratios[direction], 4)
        figures[f"{direction}_cpu_ratio"] = round(cpu_ratios[direction], 4)
    figures["daemon_rss_growth_max_mib"] = round(growth_max, 1)
    figures["daemon_rss_idle_mib"] = round(bench.daemon_idle_rss, 1)
    figures["daemon_rss_end_mib"] = round(end["daemon"]["VmRSS"], 1)
    figures["daemon_peak_rss_mib"] = round(end["daemon"]["VmHWM"], 1)
    figures["baseline_peak_rss_mib"] = round(end["baseline"]["VmHWM"], 1)
    figures.update({f"warmup_{key}": value for key, value in warmup.items()})
    figures["waited_quiet_s"] = round(waited, 1)
    figures["busy_starts"] = busy_starts
    figures["upload_ok"] = ratios["upload"] >= MIN_RATIO
    figures["download_ok"] = ratios["download"] >= MIN_RATIO
    figures["rss_ok"] = growth_max <= MAX_GROWTH_MIB
    print(json.dumps(figures))
    return figures


# Main.


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size", type=parse_size, default=parse_size("1G"), help="bytes per transfer: 1G, 4G, 256M... (default: 1G)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="measurements of each transfer; the median is reported (default: 3)"
    )
    parser.add_argument("--only", choices=["upload", "download"], help="measure one direction only")
    parser.add_argument("--profile", metavar="FILE", help="run the daemon under cProfile, stats to FILE")
    parser.add_argument("--profile-top", type=int, default=30, help="functions to show with --profile")
    parser.add_argument(
        "--daemon-log-level",
        default="info",
        choices=["debug", "info", "warn", "error", "critical"],
        help="the daemon's log level (default: info, as deployed)",
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=60.0,
        help="before each transfer, wait up to this many seconds for other processes to go quiet (default: 60)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run curl on the first CPU and both servers on the last (steadier figures; not the default)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, state; not the files)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.profile:
        args.profile = os.path.abspath(args.profile)
    return args


async def main(reactor: Any, argv: list[str]) -> None:
    args = parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="mjt-")  # short: the UNIX socket path must fit in sun_path
    files = [os.path.join(tmp, "upload.bin"), os.path.join(tmp, "warmup.bin")]
    bench = Bench(reactor, args, tmp)
    directions = [args.only] if args.only else ["upload", "download"]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {d: {"bare": [], "daemon": []} for d in directions}
    warmup: dict[str, float] = {}
    state = {"failed": True, "cleaned": False}

    def clean_up() -> None:
        """
        Stop the servers, delete the files; the logs too unless kept.  Also
        run if the reactor stops first (Ctrl-C).
        """
        if state["cleaned"]:
            return
        state["cleaned"] = True
        bench.stop_servers()
        for path in files:
            if os.path.exists(path):
                os.unlink(path)
        if state["failed"] or args.keep:
            print(f"logs and state kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    trigger = reactor.addSystemEventTrigger("before", "shutdown", clean_up)
    try:
        if "upload" in directions:
            print(f"writing a {human(args.size)} file in {tmp}...", file=sys.stderr, flush=True)
            make_file(files[0], args.size)
            make_file(files[1], WARMUP_SIZE)
        await bench.start()
        # Warm-up, not in the figures: the first transfer of each kind to each server.
        for which in ("bare", "daemon"):
            for direction in directions:
                if direction == "upload":
                    result = await bench.upload(which, files[1], WARMUP_SIZE)
                else:
                    result = await bench.download(which, WARMUP_SIZE)
                warmup[f"{direction}_{which}_rss_growth_mib"] = round(result["growth"], 1)
                await bench.settle()
        # The timed transfers: baseline and daemon alternating.
        for round_ in range(args.repeat):
            for direction in directions:
                for which in ("bare", "daemon"):
                    waited, others = await bench.wait_quiet()
                    if direction == "upload":
                        result = await bench.upload(which, files[0], args.size)
                    else:
                        result = await bench.download(which, args.size)
                    result["waited_quiet_s"] = waited
                    result["other_cpu_before"] = others
                    results[direction][which].append(result)
                    print(
                        f"run {round_ + 1}/{args.repeat} {direction:8} {which:6} {result['mb_s']:8.0f} MB/s "
                        f"{result['wall_s']:7.2f} s  server CPU {result['server_cpu']:4.0%} "
                        f"({result['server_cpu_s_per_gib']:.2f} s/GiB, {result['server_user_share']:.0%} user, "
                        f"{result['server_faults_per_gib']:.0f} faults/GiB)  others {result['other_cpu']:.0%}  "
                        f"RSS {result['rss_before']:.1f} -> {result['rss_peak']:.1f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )
                    await bench.settle()
        assert bench.daemon is not None and bench.baseline is not None
        end = {"daemon": proc_status(bench.daemon.pid), "baseline": proc_status(bench.baseline.pid)}
        state["failed"] = False
    except BaseException:
        print(f"benchmark failed; logs in {tmp}", file=sys.stderr)
        raise
    finally:
        await bench.close_client()
        clean_up()
        reactor.removeSystemEventTrigger(trigger)
    if len(directions) == 2:
        report(args, bench, results, end, warmup)
    else:
        report_one(args, results, warmup)
    if args.profile:
        print_profile(args.profile, args.profile_top)


def report_one(
    args: argparse.Namespace, results: dict[str, dict[str, list[dict[str, Any]]]], warmup: dict[str, float]
) -> None:
    """
    With C{--only}: the figures of one direction.
    """
    figures: dict[str, Any] = {"size_bytes": args.size, "repeat": args.repeat}
    for direction, by_server in results.items():
        summary = {w: summarize(runs) for w, runs in by_server.items()}
        ratio = summary["daemon"]["mb_s"] / summary["bare"]["mb_s"]
        for which, s in summary.items():
            print(
                f"{direction} {which:6} {s['mb_s']:8.0f} MB/s  server CPU {s['server_cpu']:4.0%} "
                f"({s['server_cpu_s_per_gib']:.2f} s/GiB)  "
                f"RSS growth {s['growth']:+.1f} MiB (max {s['growth_max']:+.1f})"
            )
            figures[f"{direction}_{which}_mb_s"] = round(s["mb_s"], 1)
            figures[f"{direction}_{which}_server_cpu"] = round(s["server_cpu"], 3)
            figures[f"{direction}_{which}_server_cpu_s_per_gib"] = round(s["server_cpu_s_per_gib"], 3)
            figures[f"{direction}_{which}_rss_growth_max_mib"] = round(s["growth_max"], 1)
        print(f"ratio daemon/bare: {ratio:.3f}   target >= {MIN_RATIO:.2f}: {'OK' if ratio >= MIN_RATIO else 'MISSED'}")
        figures[f"{direction}_ratio"] = round(ratio, 4)
    figures.update({f"warmup_{key}": value for key, value in warmup.items()})
    print(json.dumps(figures))


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
