"""
Services for the transfer-progress tests, loaded into the daemon as a --plugin module.
"""

from __future__ import annotations

from twisted.internet.task import deferLater

from midjobs.job import Job
from midjobs.service import Service, job
from midjobs.transfer_progress import transfer_progress


class RateService(Service):
    namespace = "rate"

    @job(pipes=["input"])
    async def slow_read(self, job: Job, chunk: int, delay: float) -> int:
        """
        Read the upload C{chunk} bytes at a time, C{delay} seconds apart.
        """
        pipe = job.pipes.input
        assert pipe is not None
        done = 0
        while data := await pipe.read(chunk):
            done += len(data)
            await deferLater(job.reactor, delay, lambda: None)
        return done

    @job()
    async def counted(self, job: Job, size: int, chunk: int, delay: float) -> int:
        """
        Move nothing, but report C{size} bytes moving C{chunk} at a time as a
        job that moves bytes itself does.
        """
        transfer = transfer_progress(job)
        transfer.expect(size)
        done = 0
        while done < size:
            await deferLater(job.reactor, delay, lambda: None)
            done = min(size, done + chunk)
            transfer.moved(done)
        transfer.finish()
        return done
