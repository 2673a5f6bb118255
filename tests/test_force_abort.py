"""
C{core.job_abort(id, {"force": true})} over a real daemon: a full
administrator aborts a job that is not abortable (logged with their name and
address), and a stuck thread job gives up its lock after the grace period;
anyone else gets C{EPERM}; without C{force} nothing changed (C{EINVAL}), and
the one-argument call of TrueNAS clients works as before.
"""

from __future__ import annotations

import errno
from typing import Any, AsyncIterator, Callable

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher

import midjobs.job
from conftest import ADMIN, RunningDaemon
from midjobs.client import Client, ClientCallError, ClientValidationErrors, connect
from midjobs.config import Settings

from test_jobs import record, subscribed

FORCED = "Job aborted by force"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, plugins=(*settings.plugins, "test_job_timeout_services"))


class LogLines:
    """
    The daemon's log lines, and a way to wait for one.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._waiters: list[tuple[str, Deferred[str]]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        line = formatEvent(event)
        self.lines.append(line)
        for waiter in list(self._waiters):
            if waiter[0] in line:
                self._waiters.remove(waiter)
                waiter[1].callback(line)

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    def wait_for(self, text: str, timeout: float = 10) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self._waiters.append((text, d))
        for line in self.matching(text):
            self._waiters.remove((text, d))
            d.callback(line)
            break
        return d.addTimeout(timeout, reactor)


@pytest.fixture
def log_lines() -> Any:
    lines = LogLines()
    globalLogPublisher.addObserver(lines)
    yield lines
    globalLogPublisher.removeObserver(lines)


@pytest_twisted.async_yield_fixture
async def release_stuck(daemon: RunningDaemon) -> AsyncIterator[Callable[[], None]]:
    """
    Lets C{timeouts.stuck} return (at the end of the test at the latest).
    """
    released = daemon.middleware.services["timeouts"].released
    yield released.set
    released.set()


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(midjobs.job, "ABORT_GRACE", 0.2)
    return 0.2


@pytest_twisted.ensureDeferred
async def test_an_admin_forces_a_stuck_job_out_and_its_lock_is_freed(
    admin_client: Client, log_lines: LogLines, release_stuck: Callable[[], None], short_grace: float
) -> None:
    events = await subscribed(admin_client)
    stuck = await admin_client.call("timeouts.stuck")
    await events.wait_for(lambda msg, id, f: id == stuck and f["progress"]["description"] == "stuck")
    after = await admin_client.call("timeouts.after_stuck")
    assert (await record(admin_client, after))["state"] == "WAITING"

    # Without force, nothing changed: the job is not abortable.
    with pytest.raises(ClientCallError) as error:
        await admin_client.call("core.job_abort", stuck)
    assert error.value.errname == "EINVAL" and "not abortable" in error.value.reason
    with pytest.raises(ClientCallError):
        await admin_client.call("core.job_abort", stuck, {"force": False})

    assert await admin_client.call("core.job_abort", stuck, {"force": True}) is None
    # Its thread ignores the abort; after the grace period it is recorded
    # ABORTED anyway and the job behind it runs.
    aborted = await events.state(stuck, "ABORTED")
    assert aborted["error"] == FORCED
    assert aborted["exc_info"]["errno"] == errno.ECANCELED
    assert (await events.state(after, "SUCCESS"))["result"] == "ran"
    forced = log_lines.matching("forced the abort")
    assert len(forced) == 1
    assert forced[0].startswith(f"{ADMIN[0]} from ")
    assert "127.0.0.1" in forced[0]
    assert f"job {stuck} (timeouts.stuck, not abortable) in state RUNNING" in forced[0]
    assert log_lines.matching("did not stop within")

    # When the thread does return, its result is ignored.
    release_stuck()
    await log_lines.wait_for(f"Job {stuck} (timeouts.stuck) returned")
    final = await record(admin_client, stuck)
    assert final["state"] == "ABORTED" and final["result"] is None and final["error"] == FORCED


@pytest_twisted.ensureDeferred
async def test_only_a_full_admin_may_force(
    daemon: RunningDaemon, admin_client: Client, log_lines: LogLines, release_stuck: Callable[[], None], short_grace: float
) -> None:
    await admin_client.call("user.create", {"username": "alice", "password": "alice-pass", "roles": []})
    alice = await connect(daemon.ws_url, reactor=reactor)
    try:
        assert await alice.login("alice", "alice-pass")
        events = await subscribed(admin_client)
        stuck = await alice.call("timeouts.stuck")
        await events.state(stuck, "RUNNING")
        # Her own job, but she is not a full administrator.
        with pytest.raises(ClientCallError) as error:
            await alice.call("core.job_abort", stuck, {"force": True})
        assert error.value.errname == "EPERM"
        (refusal,) = log_lines.matching("may not force the abort")
        assert refusal.startswith("alice from ") and "127.0.0.1" in refusal
        with pytest.raises(ClientCallError) as error:
            await alice.call("core.job_abort", stuck)
        assert error.value.errname == "EINVAL"
        assert (await record(admin_client, stuck))["state"] == "RUNNING"
        assert not log_lines.matching("forced the abort")

        # The trusted local peer is a full administrator.
        local = await connect(daemon.unix_url, reactor=reactor)
        try:
            await local.call("core.job_abort", stuck, {"force": True})
        finally:
            await local.close()
        assert (await events.state(stuck, "ABORTED"))["error"] == FORCED
        assert len(log_lines.matching("forced the abort")) == 1
    finally:
        await alice.close()


@pytest_twisted.ensureDeferred
async def test_force_abort_options_are_checked(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    job_id = await admin_client.call("core.job_test", {"sleep": 30})
    await events.state(job_id, "RUNNING")
    with pytest.raises(ClientValidationErrors) as error:
        await admin_client.call("core.job_abort", job_id, {"force": "yes", "now": True})
    assert {e.attribute for e in error.value.errors} == {"options.force", "options.now"}
    assert (await record(admin_client, job_id))["state"] == "RUNNING"
    # Forcing an abortable job aborts it too; a finished job is left as it was.
    await admin_client.call("core.job_abort", job_id, {"force": True})
    assert (await events.state(job_id, "ABORTED"))["error"] == FORCED
    await admin_client.call("core.job_abort", job_id, {"force": True})
    assert (await record(admin_client, job_id))["error"] == FORCED
