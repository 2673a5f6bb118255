"""
How many unfinished jobs one user may have (C{[limits] jobs_per_user}):
past it, a call that would start one more fails with C{EBUSY}, and nothing
else is refused: another user's calls, the jobs the daemon starts itself.
"""

from __future__ import annotations

import errno

import attrs
import pytest
import pytest_twisted

from conftest import RunningDaemon
from midjobs.client import Client
from midjobs.config import Settings

from test_identities import create_user, log_in, refused


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, max_jobs_per_user=2)


@pytest_twisted.ensureDeferred
async def test_a_user_has_at_most_so_many_unfinished_jobs(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client]
) -> None:
    await create_user(admin_client, "alice", ["FULL_ADMIN"])
    await create_user(admin_client, "bob", ["FULL_ADMIN"])
    alice = await log_in(daemon, connections, "alice")
    bob = await log_in(daemon, connections, "bob")
    held = [await alice.call("core.job_test", {"sleep": 60}) for _ in range(2)]
    error = await refused(alice.call("core.job_test", {"sleep": 60}), errno.EBUSY)
    assert error.errmsg == "Too many unfinished jobs (2) for this user"
    # Through core.bulk alike: the bulk job itself is one more.
    await refused(alice.call("core.bulk", "core.job_test", [[{}]]), errno.EBUSY)
    # Another user, and the daemon itself, are not concerned.
    assert await bob.call_job("core.job_test", {}) is True
    own = [await daemon.middleware.call("core.job_test", {"sleep": 60}) for _ in range(3)]
    for job in own:
        job.abort()
        await job.wait()
    # Waiting is a job too (core.job_wait): refused at the limit.
    await refused(alice.call("core.job_wait", held[0]), errno.EBUSY)
    # Once one of alice's jobs ends, she may start another.
    await alice.call("core.job_abort", held[0])
    await daemon.middleware.jobs.get(held[0]).wait()
    assert await alice.call_job("core.job_test", {}) is True
    await alice.call("core.job_abort", held[1])
    await daemon.middleware.jobs.get(held[1]).wait()
