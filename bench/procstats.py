"""
Facts about processes and the machine that the benchmarks read from /proc.
"""

from __future__ import annotations

import os
import socket

__all__ = ["free_port", "main_thread_cpu", "print_profile", "proc_status", "system_busy"]

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """
    A TCP port free on 127.0.0.1 right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, float]:
    """
    VmRSS and VmHWM of C{pid}, in MiB.
    """
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024
    return out


def main_thread_cpu(pid: int) -> float:
    """
    CPU seconds (user + system) used so far by the main thread of C{pid}
    (a Twisted server's reactor thread); the process's other threads are
    the rest of its total.
    """
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def system_busy() -> float:
    """
    CPU seconds every process on the machine has used so far: not idle nor
    iowait, nor interrupts (the loopback's network stack runs there, for
    whichever process sends).
    """
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice
    return (sum(values[:8]) - values[3] - values[4] - values[5] - values[6]) / _TICKS


def print_profile(path: str, top: int) -> None:
    import pstats

    stats = pstats.Stats(path)
    stats.strip_dirs()
    for key in ("tottime", "cumulative"):
        print(f"\n--- daemon profile: top {top} by {key} ---")
        stats.sort_stats(key).print_stats(top)
