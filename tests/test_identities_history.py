"""
Ownership by identity holds in the job history too: with one finished job kept
in memory, older jobs are read from SQLite, where C{core.get_jobs} keeps a
user's jobs by C{credentials.data.user_id} exactly as in memory.
"""

from __future__ import annotations


import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor

from conftest import RunningDaemon
from midjobs.client import Client, connect
from midjobs.config import Settings

from test_identities import create_user, job_ids, log_in, password_of


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, plugins=(*settings.plugins, "access_services"), keep_finished_jobs=1)



async def finished(admin: Client, runner: Client, key: str) -> int:
    """
    Run C{access.hold(key)} as C{runner} to its end; its id.
    """
    job_id = await runner.call("access.hold", key)
    await admin.call("access.release", key)
    await admin.call_job("core.job_wait", job_id)
    return job_id


def in_memory(daemon: RunningDaemon) -> set[int]:
    return {job.id for job in daemon.middleware.jobs.listed()}


@pytest_twisted.ensureDeferred
async def test_history_keeps_jobs_by_identity(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client]
) -> None:
    alice = await create_user(admin_client, "alice", ["RUNNER"])
    await create_user(admin_client, "root", ["RUNNER"])
    session = await log_in(daemon, connections, "alice")
    local = await connect(daemon.unix_url, reactor=reactor)
    connections.append(local)
    hers = [await finished(admin_client, session, "a1"), await finished(admin_client, session, "a2")]
    roots = await finished(admin_client, local, "r1")
    # Only the newest finished job (the last core.job_wait) is in memory: these come from the history.
    assert in_memory(daemon).isdisjoint({*hers, roots})

    await admin_client.call("user.update", alice["id"], {"username": "alice2"})
    assert await job_ids(session) == set(hers)
    await create_user(admin_client, "alice", ["RUNNER"])
    newcomer = await log_in(daemon, connections, "alice")
    assert await job_ids(newcomer) == set()
    assert await newcomer.call("core.get_jobs", [], {"count": True}) == 0
    assert await newcomer.call("core.get_jobs", [["credentials.data.username", "=", "alice"]]) == []

    impostor = await log_in(daemon, connections, "root")
    assert await job_ids(impostor) == set()
    assert await job_ids(local) >= {*hers, roots}
    renamed = await log_in(daemon, connections, "alice2", password_of("alice"))
    assert await job_ids(renamed, ["id", "in", [*hers, roots]]) == set(hers)
