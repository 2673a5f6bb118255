"""
Services for the upload tests, loaded into the daemon as a --plugin module.

A test that needs to hold a job back registers a L{Gate} under a key and
passes the key as the job's argument: the job reports its input pipe through
the gate, then reads only as far as the test lets it.
"""

from __future__ import annotations

import errno
import hashlib
from typing import Any

from twisted.internet.defer import Deferred

from midjobs.errors import CallError
from midjobs.job import Job
from midjobs.pipe import Pipe
from midjobs.service import Service, job

BLOCK = 1024 * 1024


def _describe(pipe: Pipe, digest: Any, size: int) -> list[Any]:
    return [pipe.filename, pipe.content_type, digest.hexdigest(), size]


class Gate:
    """
    How a test holds back an L{UploadService.gated} job.

    @ivar started: fires with the job's first input pipe when the job runs.
    @ivar reads: how many more reads the job may make (L{None}: no limit).
    """

    def __init__(self, reads: int | None = 0) -> None:
        from twisted.internet import reactor

        self.started: Deferred[Pipe] = Deferred()
        self.started.addTimeout(30, reactor)
        self.reads = reads
        self._waiting: Deferred[None] | None = None

    def allow(self, reads: int | None = None) -> None:
        """
        Let the job make C{reads} more reads (all it wants with L{None}).
        """
        self.reads = None if reads is None else (self.reads or 0) + reads
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    async def wait(self) -> None:
        while self.reads is not None and self.reads <= 0:
            self._waiting = Deferred()
            await self._waiting
        if self.reads is not None:
            self.reads -= 1


#: The gates of the running test, by key.
GATES: dict[str, Gate] = {}


class UploadService(Service):
    namespace = "upload"

    @job(pipes=["input"])
    def hash(self, job: Job, tag: str | None = None) -> list[list[Any]]:
        """
        In a thread: C{[filename, content_type, sha256, size]} for each uploaded file.
        """
        results = []
        for pipe in job.pipes.inputs:
            digest, size = hashlib.sha256(), 0
            while block := pipe.r.read(BLOCK):
                digest.update(block)
                size += len(block)
            results.append(_describe(pipe, digest, size))
        return results

    @job(pipes=["input"])
    async def hash_async(self, job: Job) -> list[list[Any]]:
        """
        The same as C{hash}, reading in the reactor with C{async for}.
        """
        results = []
        async for pipe in job.pipes.inputs:
            digest, size = hashlib.sha256(), 0
            while block := await pipe.read(BLOCK):
                digest.update(block)
                size += len(block)
            results.append(_describe(pipe, digest, size))
        return results

    @job(pipes=["input"])
    async def gated(self, job: Job, key: str) -> list[list[Any]]:
        """
        Like C{hash_async}, reading 64 KiB at a time as the test's gate allows.
        """
        gate = GATES[key]
        gate.started.callback(job.pipes.input)
        results = []
        async for pipe in job.pipes.inputs:
            digest, size = hashlib.sha256(), 0
            while True:
                await gate.wait()
                block = await pipe.read(64 * 1024)
                if not block:
                    break
                digest.update(block)
                size += len(block)
            results.append(_describe(pipe, digest, size))
        return results

    @job(pipes=["input"])
    async def ignore(self, job: Job) -> str:
        """
        Take an upload and read none of it.
        """
        return "ignored"

    @job(pipes=["input"])
    async def fail_early(self, job: Job, message: str) -> None:
        """
        Fail at once, while the upload still streams.
        """
        raise CallError(message, errno.EINVAL)

    @job(pipes=["input"])
    async def count(self, job: Job, n: int) -> int:
        """
        Takes one integer: anything else is refused before the job runs.
        """
        return n

    @job()
    async def no_input(self, job: Job) -> str:
        """
        A job without an input pipe.
        """
        return "nothing"

    async def plain(self) -> str:
        """
        Not a job.
        """
        return "plain"
