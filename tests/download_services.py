"""
Services for the download tests, loaded into the daemon as a --plugin module.

Each job writes a deterministic byte pattern (L{pattern_blocks}) to its
output pipe; the tests recompute its SHA-256 with L{pattern_sha256}.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Iterator

from midjobs.errors import CallError
from midjobs.job import Job
from midjobs.service import Service, job

#: The size of each write.
BLOCK = 64 * 1024
_PERIOD = 251
_BASE = bytes((i * 7 + 3) % _PERIOD for i in range(BLOCK + _PERIOD))

#: Gates a gated job waits on, by name; the tests open them.
GATES: dict[str, threading.Event] = {}


def pattern_blocks(size: int, block: int = BLOCK) -> Iterator[bytes]:
    """
    C{size} bytes of the pattern, in blocks of C{block} bytes (at most L{BLOCK}).
    """
    index = 0
    done = 0
    while done < size:
        n = min(block, size - done, BLOCK)
        start = index % _PERIOD
        yield _BASE[start : start + n]
        done += n
        index += 1


def pattern_sha256(size: int, block: int = BLOCK) -> str:
    digest = hashlib.sha256()
    for piece in pattern_blocks(size, block):
        digest.update(piece)
    return digest.hexdigest()


def gate(name: str) -> threading.Event:
    return GATES.setdefault(name, threading.Event())


class DownloadService(Service):
    namespace = "dl"

    @job(pipes=["output"], abortable=True)
    def thread_write(self, job: Job, size: int) -> int:
        """
        Write C{size} bytes of the pattern from a thread; progress extra is the count written.
        """
        written = 0
        for piece in pattern_blocks(size):
            job.pipes.output.w.write(piece)
            written += len(piece)
            job.set_progress(100 * written // max(size, 1), extra=written)
        job.pipes.output.w.close()
        return written

    @job(pipes=["output"], abortable=True)
    async def async_write(self, job: Job, size: int) -> int:
        """
        Write C{size} bytes of the pattern with C{await pipe.write}.
        """
        written = 0
        pipe = job.pipes.output
        for piece in pattern_blocks(size):
            await pipe.write(piece)
            written += len(piece)
            job.set_progress(100 * written // max(size, 1), extra=written)
        await pipe.close()
        return written

    @job(pipes=["output"])
    def gated_write(self, job: Job, size: int, first: int, gate_name: str) -> int:
        """
        Write the first C{first} bytes of the pattern, wait for the gate, write the rest.
        """
        written = 0
        opened = gate(gate_name)
        for piece in pattern_blocks(size):
            if written == first and not opened.wait(30):
                raise CallError("The gate did not open")
            job.pipes.output.w.write(piece)
            written += len(piece)
            job.set_progress(100 * written // max(size, 1), extra=written)
        return written

    @job(pipes=["output"])
    def fail_after(self, job: Job, size: int, message: str) -> None:
        """
        Write C{size} bytes of the pattern, then fail with C{message}.
        """
        for piece in pattern_blocks(size):
            job.pipes.output.w.write(piece)
        raise CallError(message)

    @job()
    async def no_output(self, job: Job) -> bool:
        return True
