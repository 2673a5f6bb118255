"""
Jobs for C{bench/transfer.py}, loaded into the daemon with C{--plugin transfer_services}
(with C{bench/} on C{PYTHONPATH}).

  - C{bench_transfer.sink}: reads every uploaded file to the end with
    C{await pipe.read(1 MiB)} and returns how many bytes it read;
  - C{bench_transfer.source(size)}: writes C{size} bytes to its output pipe
    with C{await pipe.write(...)} of one preallocated 1 MiB block, closes the
    pipe and returns C{size}.

Both run in the reactor (async) and do nothing else: no progress, no hashing.
"""

from __future__ import annotations

import os

from midjobs.job import Job
from midjobs.service import Service, job

#: How much a job reads or writes at once.
BLOCK = 1024 * 1024
#: The bytes every download sends, repeated (random: nothing on the way can compress it).
_BLOCK_DATA = os.urandom(BLOCK)


class BenchTransferService(Service):
    namespace = "bench_transfer"

    @job(pipes=["input"])
    async def sink(self, job: Job) -> int:
        """
        Read every uploaded file to its end; the number of bytes read.
        """
        total = 0
        async for pipe in job.pipes.inputs:
            while block := await pipe.read(BLOCK):
                total += len(block)
        return total

    @job(pipes=["output"])
    async def source(self, job: Job, size: int) -> int:
        """
        Write C{size} bytes to the output pipe, then close it.
        """
        pipe = job.pipes.output
        block = _BLOCK_DATA
        left = size
        while left >= BLOCK:
            await pipe.write(block)
            left -= BLOCK
        if left:
            await pipe.write(block[:left])
        await pipe.close()
        return size
