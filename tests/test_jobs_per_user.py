"""
How many unfinished jobs one user may have (C{[limits] jobs_per_user}):
past it, a call that would start one more fails with C{EBUSY}, and nothing
else is refused: another user's calls, the jobs the daemon starts itself.
"""

from __future__ import annotations

import errno
from typing import Any, Callable

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from conftest import RunningDaemon
from midjobs.client import Client
from midjobs.config import Settings
from midjobs.errors import CallError
from midjobs.job import Job, JobsQueue
from midjobs.locks import Admission
from midjobs.service import JobOptions

from test_identities import create_user, log_in, refused
from test_locks import ALICE, LaterLocks, outcomes


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


@attrs.frozen
class Owner:
    user_id: int


def owned_job(reactor: MemoryReactorClock, gate: Deferred[None], lock: str | None = None, queue_size: int | None = 5) -> Job:
    async def run(job: Job) -> None:
        await gate

    options = JobOptions(lock=lock, lock_queue_size=queue_size)
    return Job(reactor, "t.run", options, run, [], is_async=True, credentials=ALICE, owner=Owner(2))


def refusal(call: Callable[[], Any]) -> CallError | None:
    try:
        call()
    except CallError as e:
        return e
    return None


def test_the_limit_holds_while_admissions_are_answered_later() -> None:
    """
    A lock manager (a cluster's) or job ids that answer later: the calls
    made meanwhile count at once, so no more than the limit get through.
    """
    reactor = MemoryReactorClock()
    locks = LaterLocks()
    queue = JobsQueue(locks=locks)
    queue.max_per_user = 2
    gate: Deferred[None] = Deferred()
    added = [outcomes(queue.add(owned_job(reactor, gate, lock="disk", queue_size=None))) for _ in range(2)]
    error = refusal(lambda: queue.add(owned_job(reactor, gate, lock="disk", queue_size=None)))
    assert error is not None and error.errno == errno.EBUSY
    # One admission fails: its room is given back.
    locks.admissions.pop(0)[3].errback(CallError("no", errno.EIO))
    locks.admit_next(Admission.FREE)
    assert refusal(lambda: queue.add(owned_job(reactor, gate))) is None
    assert refusal(lambda: queue.add(owned_job(reactor, gate))) is not None
    added[0][0].trap(CallError)
    gate.callback(None)
    assert refusal(lambda: queue.add(owned_job(reactor, gate))) is None


def test_a_call_handed_a_waiting_job_gives_its_room_back() -> None:
    reactor = MemoryReactorClock()
    queue = JobsQueue()
    queue.max_per_user = 3
    gate: Deferred[None] = Deferred()
    running = owned_job(reactor, gate, lock="disk", queue_size=1)
    waiting = owned_job(reactor, gate, lock="disk", queue_size=1)
    queue.add(running)
    queue.add(waiting)
    # Each of these is handed the waiting job: none holds a place.
    for _ in range(3):
        shared = outcomes(queue.add(owned_job(reactor, gate, lock="disk", queue_size=1)))
        assert shared == [waiting]
    assert refusal(lambda: queue.add(owned_job(reactor, gate))) is None
    assert refusal(lambda: queue.add(owned_job(reactor, gate))) is not None
    gate.callback(None)
