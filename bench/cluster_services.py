"""
The job of C{bench/cluster.py}'s event latency measure, loaded into the
nodes as a C{--plugin} module.
"""

from __future__ import annotations

import time

from twisted.internet.task import deferLater

from midjobs.job import Job
from midjobs.service import Service, job


class ClusterBenchService(Service):
    namespace = "clusterbench"

    @job()
    async def stamps(self, job: Job, changes: int, period: float, offset: float = 0.0) -> int:
        """
        After C{offset} seconds, change the job's progress C{changes} times,
        one every C{period} seconds, each carrying the time of the change
        (C{time.time_ns()}) as C{extra}.  A job's progress goes out at most
        once a second (L{midjobs.progress}): C{period} at or above it makes
        every change an event.
        """
        reactor = self.middleware.reactor
        await deferLater(reactor, offset, lambda: None)
        for n in range(1, changes + 1):
            job.set_progress(100 * n / changes, extra={"t": time.time_ns()})
            await deferLater(reactor, period, lambda: None)
        return changes
