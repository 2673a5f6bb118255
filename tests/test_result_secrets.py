"""
Secrets in results (L{midjobs.service.secret_result}): records, events, the
history and C{system.debug} show C{********} there; the caller's own answer
carries the real result, and so does C{core.get_jobs} with
C{{"extra": {"raw_result": true}}}, for the job's owner or a full
administrator only.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any

import attrs
import pytest
import pytest_twisted

from conftest import RunningDaemon
from midjobs.arguments import REDACTED
from midjobs.client import Client
from midjobs.config import Settings

from test_identities import Events, create_user, log_in, password_of  # noqa: F401

RAW = {"extra": {"raw_result": True}}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, plugins=(*settings.plugins, "result_secret_services", "download_services"))



def redacted_credential(name: str) -> dict[str, Any]:
    return {"name": name, "token": REDACTED, "grants": [{"scope": "a", "key": REDACTED}]}


def real_credential(name: str) -> dict[str, Any]:
    return {"name": name, "token": f"token-of-{name}", "grants": [{"scope": "a", "key": f"key-of-{name}"}]}


async def record(client: Client, job_id: int, options: dict[str, Any] | None = None) -> dict[str, Any]:
    return await client.call("core.get_jobs", [["id", "=", job_id]], {"get": True, **(options or {})})


@pytest_twisted.ensureDeferred
async def test_records_and_events_hide_secret_results(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client]
) -> None:
    await create_user(admin_client, "alice", ["RUNNER"])
    await create_user(admin_client, "ro", ["READONLY_ADMIN"])
    alice = await log_in(daemon, connections, "alice")
    ro = await log_in(daemon, connections, "ro")
    seen = Events()
    await ro.subscribe("core.get_jobs", seen)

    # The caller's own answer carries the secret.
    assert await alice.call_job("issue.credential", "alice") == real_credential("alice")
    job_id = (await alice.call("core.get_jobs", [["method", "=", "issue.credential"]]))[0]["id"]

    ended = await seen.wait_for(lambda msg, id, f: id == job_id and f.get("state") == "SUCCESS")
    assert ended["result"] == redacted_credential("alice")
    assert "token-of-alice" not in repr(seen.received)
    assert (await record(ro, job_id))["result"] == redacted_credential("alice")
    assert (await record(alice, job_id))["result"] == redacted_credential("alice")

    # raw_result: the owner and a full administrator, nobody else.
    assert (await record(alice, job_id, RAW))["result"] == real_credential("alice")
    assert (await record(admin_client, job_id, RAW))["result"] == real_credential("alice")
    assert (await record(ro, job_id, RAW))["result"] == redacted_credential("alice")

    # core.job_wait answers its caller with the result, and records nothing more.
    waiter = await alice.call_job("core.job_wait", job_id)
    assert waiter == real_credential("alice")
    wait_records = await ro.call("core.get_jobs", [["method", "=", "core.job_wait"]])
    assert [r["result"] for r in wait_records] == [redacted_credential("alice")]


@pytest_twisted.ensureDeferred
async def test_bulk_hides_the_secrets_of_the_results_it_forwards(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client]
) -> None:
    await create_user(admin_client, "alice", ["RUNNER"])
    await create_user(admin_client, "ro", ["READONLY_ADMIN"])
    ro = await log_in(daemon, connections, "ro")
    seen = Events()
    await ro.subscribe("core.get_jobs", seen)

    results = await admin_client.call_job("core.bulk", "api_key.create", [[{"name": "k1", "username": "alice"}]])
    key = results[0]["result"]["key"]
    assert key and key != REDACTED
    bulk = (await admin_client.call("core.get_jobs", [["method", "=", "core.bulk"]]))[0]
    assert bulk["result"][0]["result"]["key"] == REDACTED
    assert bulk["result"][0]["result"]["name"] == "k1"
    await seen.wait_for(lambda msg, id, f: id == bulk["id"] and f.get("state") == "SUCCESS")
    assert key not in repr(seen.received)

    tokens = await admin_client.call_job("core.bulk", "auth.generate_token", [[60]])
    token = tokens[0]["result"]
    bulk = (await admin_client.call("core.get_jobs", [["method", "=", "core.bulk"]], {"order_by": ["-id"]}))[0]
    assert [entry["result"] for entry in bulk["result"]] == [REDACTED]
    assert token not in repr(await ro.call("core.get_jobs"))


@pytest_twisted.ensureDeferred
async def test_bulk_hides_the_download_urls_it_makes(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client]
) -> None:
    """
    A download URL carries its token: made through C{core.bulk}, it is a
    secret of the bulk job's record, which a read-only administrator sees.
    """
    await create_user(admin_client, "ro", ["READONLY_ADMIN"])
    ro = await log_in(daemon, connections, "ro")
    made = await admin_client.call_job("core.bulk", "core.download", [["dl.async_write", [10], "x", True]])
    assert made[0]["error"] is None
    job_id, url = made[0]["result"]
    assert await admin_client.call_job("sample.logging_job", 3) == 3
    (logged,) = await admin_client.call("core.get_jobs", [["method", "=", "sample.logging_job"]])
    made = await admin_client.call_job("core.bulk", "core.job_download_logs", [[logged["id"], "x.log", True]])
    assert made[0]["error"] is None
    logs_url = made[0]["result"]
    bulks = await ro.call("core.get_jobs", [["method", "=", "core.bulk"]], {"order_by": ["id"]})
    assert [entry["result"] for bulk in bulks for entry in bulk["result"]] == [[job_id, REDACTED], REDACTED]
    for made_url in (url, logs_url):
        assert "auth_token=" in made_url and made_url.split("auth_token=")[1] not in repr(bulks)


@pytest_twisted.ensureDeferred
async def test_the_history_keeps_only_the_redacted_result(daemon: RunningDaemon, admin_client: Client) -> None:
    assert await admin_client.call_job("issue.credential", "root") == real_credential("root")
    job_id = (await admin_client.call("core.get_jobs", [["method", "=", "issue.credential"]]))[0]["id"]
    # The job's end is durable before its caller hears of it.
    with contextlib.closing(sqlite3.connect(daemon.state_dir / "midjobs.db")) as db:
        (stored,) = db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert "token-of-root" not in stored
    assert json.loads(stored)["result"] == redacted_credential("root")
