"""
A job that would wait for a job that waits for it (directly, or through
others) is refused with C{EDEADLK}, instead of both waiting forever: a
client cannot make jobs nobody can end but by force.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from midjobs.errors import CallError
from midjobs.job import Job
from midjobs.middleware import Middleware
from midjobs.plugins.core import CoreService
from midjobs.service import Service, job


class ChainService(Service):
    namespace = "chain"

    @job()
    async def wrap(self, job: Job, other: int) -> Any:
        return await job.wrap(self.middleware.jobs.get(other))


@pytest_twisted.async_yield_fixture
async def middleware(tmp_path: Path) -> Any:
    middleware = Middleware(reactor, tmp_path)
    middleware.add_service(CoreService)
    middleware.add_service(ChainService)
    await middleware.start()
    yield middleware
    await middleware.stop()


async def next_id(middleware: Middleware) -> int:
    done = await middleware.call("core.job_test")
    await done.wait()
    return done.id + 1


@pytest_twisted.ensureDeferred
async def test_a_bulk_step_waiting_for_its_bulk(middleware: Middleware) -> None:
    bulk_id = await next_id(middleware)
    bulk = await middleware.call("core.bulk", "core.job_wait", [[bulk_id]])
    assert bulk.id == bulk_id
    (status,) = await bulk.wait(timeout=10, raise_error=True)
    # The bulk waits for its step first: the step may not wait for the bulk.
    assert status["error"] == f"Job {status['job_id']} cannot wait for job {bulk_id}, which waits for it"
    step = middleware.jobs.get(status["job_id"])
    assert step.state.value == "FAILED"
    assert step.exc_info["errno"] == errno.EDEADLK


@pytest_twisted.ensureDeferred
async def test_a_cycle_through_three_jobs(middleware: Middleware) -> None:
    # b waits for a, which waits for a long job: a may not wait for b.
    long = await middleware.call("core.job_test", {"sleep": 60})
    a = await middleware.call("chain.wrap", long.id)
    b = await middleware.call("chain.wrap", a.id)
    with pytest.raises(CallError) as error:
        await a.wrap(b)
    assert error.value.errno == errno.EDEADLK
    long.abort()
    for waited in (long, a, b):
        await waited.wait(timeout=10)
