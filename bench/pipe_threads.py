"""
Benchmark of a pipe's thread ends: a file's worth of bytes through C{pipe.r}
and C{pipe.w}, beside a plain file copy in the same run.

    /work/venv/bin/python bench/pipe_threads.py [--size 256M] [--repeat 3]

Three transfers of C{--size} bytes, each repeated C{--repeat} times:

  - C{copy}: the baseline.  A worker thread copies a file (in the page cache)
    to another with C{readinto} of 1 MiB blocks, as C{filesystem.put} copies
    its input pipe;
  - C{put}: what C{filesystem.put} does.  The reactor writes 64 KiB chunks
    with C{await pipe.write(chunk)}, as an upload does; a worker thread copies
    C{pipe.r} to a file with C{readinto} of 1 MiB blocks;
  - C{get}: what C{filesystem.get} does.  A worker thread reads the file in
    blocks and writes them to C{pipe.w}; the pipe is delivered to a consumer
    in the reactor that drops the bytes.

Reported for each: MB/s (10^6 bytes per second of wall time, the median),
the process CPU (every thread) in milliseconds per MiB, and the ratio of
the pipe's MB/s to the copy's.  Then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.threads import deferToThread
from zope.interface import implementer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from midjobs.pipe import Pipe  # noqa: E402

MiB = 1024 * 1024
#: What an upload hands the pipe at once (the size of a socket read).
UPLOAD_CHUNK = 64 * 1024
#: What C{filesystem.put} reads from its pipe at once.
PUT_BLOCK = 1024 * 1024


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    if text[-1:].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


@implementer(IConsumer)
class DroppingConsumer:
    """
    A download's response that drops what it is given.
    """

    def __init__(self) -> None:
        self.received = 0
        self.producer: IPushProducer | None = None

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.received += len(data)


def copy_file(source: str, target: str) -> int:
    buffer = bytearray(PUT_BLOCK)
    view = memoryview(buffer)
    done = 0
    with open(source, "rb", buffering=0) as src, open(target, "wb", buffering=0) as dst:
        while n := src.readinto(buffer):
            dst.write(view[:n])
            done += n
    return done


def receive(pipe: Pipe, target: str) -> int:
    buffer = bytearray(PUT_BLOCK)
    view = memoryview(buffer)
    done = 0
    with open(target, "wb", buffering=0) as dst:
        while n := pipe.r.readinto(buffer):
            dst.write(view[:n])
            done += n
    return done


def send(pipe: Pipe, source: str, block: int) -> int:
    done = 0
    with open(source, "rb", buffering=0) as src:
        while chunk := src.read(block):
            pipe.w.write(chunk)
            done += len(chunk)
    pipe.w.close()
    return done


async def run_copy(source: str, target: str) -> int:
    return await deferToThread(copy_file, source, target)


async def run_put(reactor: Any, size: int, block: bytes, target: str) -> int:
    pipe = Pipe(reactor)
    receiving = deferToThread(receive, pipe, target)
    view = memoryview(block)
    sent = 0
    while sent < size:
        start = sent % len(block)
        chunk = view[start : start + min(UPLOAD_CHUNK, size - sent, len(block) - start)].tobytes()
        await pipe.write(chunk)
        sent += len(chunk)
    await pipe.close()
    received: int = await receiving
    assert received == size, (received, size)
    return received


async def run_get(reactor: Any, size: int, source: str, get_block: int) -> int:
    pipe = Pipe(reactor)
    consumer = DroppingConsumer()
    delivered = pipe.deliver_to(consumer)
    sent: int = await deferToThread(send, pipe, source, get_block)
    await delivered
    assert consumer.received == sent == size, (consumer.received, sent, size)
    return sent


async def measure(run: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    await run()
    return time.perf_counter() - wall, time.process_time() - cpu


async def main(reactor: Any, options: argparse.Namespace) -> None:
    size = options.size
    block = os.urandom(MiB + 7)
    with tempfile.TemporaryDirectory(dir=options.dir) as tmp:
        source, target = os.path.join(tmp, "source"), os.path.join(tmp, "target")
        with open(source, "wb") as f:
            for start in range(0, size, MiB):
                f.write(block[: min(MiB, size - start)])
        runs = {
            "copy": lambda: run_copy(source, target),
            "put": lambda: run_put(reactor, size, block, target),
            "get": lambda: run_get(reactor, size, source, options.get_block),
        }
        # One small untimed round of each, then the timed ones, interleaved.
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for name in runs:
            await runs[name]()
        for _ in range(options.repeat):
            for name, run in runs.items():
                figures[name].append(await measure(run))
    result: dict[str, Any] = {"size": size, "repeat": options.repeat, "get_block": options.get_block}
    print(f"{'':6} {'MB/s':>8} {'CPU ms/MiB':>11} {'vs copy':>8}")
    copy_rate = 0.0
    for name, samples in figures.items():
        rate = statistics.median(size / 1e6 / wall for wall, _ in samples)
        cpu = statistics.median(cpu for _, cpu in samples) * 1000 / (size / MiB)
        copy_rate = copy_rate or rate
        print(f"{name:6} {rate:8.0f} {cpu:11.3f} {rate / copy_rate:8.2f}")
        result[f"{name}_mb_s"] = round(rate, 1)
        result[f"{name}_cpu_ms_per_mib"] = round(cpu, 4)
        result[f"{name}_ratio"] = round(rate / copy_rate, 3)
    print(json.dumps(result))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--size", type=parse_size, default=256 * MiB, help="bytes per transfer (default: 256M)")
    parser.add_argument("--repeat", type=int, default=3, help="timed transfers of each kind; the median is reported")
    parser.add_argument("--get-block", type=parse_size, default=64 * 1024, help="what the get worker writes at once")
    parser.add_argument("--dir", default=None, help="where the files go (default: the temporary directory)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
