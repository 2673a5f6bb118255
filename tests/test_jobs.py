"""
The job system over a real WebSocket: states, progress, waiting, aborting, locks, nesting.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from midjobs.client import Client, ClientCallError, ClientValidationErrors, connect

from conftest import ADMIN


class JobEvents:
    """
    Collects core.get_jobs events and lets a test wait for one that matches.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, int, dict[str, Any]]] = []
        self._waiters: list[tuple[Any, Deferred[dict[str, Any]]]] = []

    def __call__(self, msg: str, collection: str, id: int, fields: dict[str, Any]) -> None:
        self.events.append((msg, id, fields))
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(msg, id, fields):
                self._waiters.remove(waiter)
                d.callback(fields)

    def wait_for(self, predicate: Any, timeout: float = 10) -> Deferred[dict[str, Any]]:
        for msg, id, fields in self.events:
            if predicate(msg, id, fields):
                return Deferred.fromCoroutine(_value(fields))
        d: Deferred[dict[str, Any]] = Deferred()
        self._waiters.append((predicate, d))
        return d.addTimeout(timeout, reactor)

    def state(self, job_id: int, state: str) -> Deferred[dict[str, Any]]:
        return self.wait_for(lambda msg, id, f: id == job_id and f["state"] == state)

    def of(self, job_id: int) -> list[tuple[str, dict[str, Any]]]:
        return [(msg, fields) for msg, id, fields in self.events if id == job_id]


async def _value(value: Any) -> Any:
    return value


async def subscribed(client: Client) -> JobEvents:
    events = JobEvents()
    await client.subscribe("core.get_jobs", events)
    return events


async def record(client: Client, job_id: int) -> dict[str, Any]:
    return await client.call("core.get_jobs", [["id", "=", job_id]], {"get": True})


@pytest_twisted.ensureDeferred
async def test_job_returns_id_then_succeeds(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    job_id = await admin_client.call("core.job_test", {"sleep": 0.2})
    assert isinstance(job_id, int)
    done = await events.state(job_id, "SUCCESS")
    assert done["result"] is True
    assert done["progress"]["percent"] == 100
    job = await record(admin_client, job_id)
    expected = {
        "id", "message_ids", "method", "arguments", "transient", "description", "abortable",
        "logs_path", "logs_excerpt", "progress", "result", "result_encoding_error", "error",
        "exception", "exc_info", "state", "time_started", "time_finished", "credentials", "node",
    }
    assert set(job) == expected
    assert job["method"] == "core.job_test"
    assert job["arguments"] == [{"sleep": 0.2}]
    assert job["state"] == "SUCCESS"
    assert job["credentials"] == {"type": "LOGIN_PASSWORD", "data": {"username": ADMIN[0], "user_id": 1}}
    assert job["time_finished"] >= job["time_started"]
    states = [fields["state"] for msg, fields in events.of(job_id)]
    assert events.of(job_id)[0][0] == "added"
    assert states[0] == "WAITING"
    assert states[-1] == "SUCCESS"
    assert "RUNNING" in states


@pytest_twisted.ensureDeferred
async def test_job_ids_increase_from_one(admin_client: Client) -> None:
    ids = [await admin_client.call("core.job_test") for _ in range(3)]
    assert ids == [1, 2, 3]


@pytest_twisted.ensureDeferred
async def test_progress_is_an_int_and_only_changes_send_events(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    job_id = await admin_client.call("sample.thread_job", 3)
    await events.state(job_id, "SUCCESS")
    percents = [f["progress"]["percent"] for msg, f in events.of(job_id)]
    assert all(isinstance(p, int) for p in percents)
    assert [33, 66, 100] == sorted(set(percents) - {0})
    descriptions = [f["progress"]["description"] for msg, f in events.of(job_id)]
    assert "step 3" in descriptions
    # One event when queued, one when running, one per step, one at the end.
    assert len(events.of(job_id)) <= 6


@pytest_twisted.ensureDeferred
async def test_abort_async_job(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    job_id = await admin_client.call("core.job_test", {"sleep": 60})
    await events.state(job_id, "RUNNING")
    await admin_client.call("core.job_abort", job_id)
    aborted = await events.state(job_id, "ABORTED")
    assert aborted["error"] == "Job aborted"
    assert aborted["time_finished"] is not None


@pytest_twisted.ensureDeferred
async def test_abort_thread_job(admin_client: Client) -> None:
    # The thread sees its abort flag and returns: as in the original daemon,
    # that is a success (a job that stops early raises JobAborted, see
    # test_compat_daemon.py).
    events = await subscribed(admin_client)
    job_id = await admin_client.call("sample.thread_wait_abort")
    await events.wait_for(lambda msg, id, f: id == job_id and f["progress"]["description"] == "waiting")
    await admin_client.call("core.job_abort", job_id)
    ended = await events.wait_for(lambda msg, id, f: id == job_id and f["state"] in ("SUCCESS", "ABORTED"))
    assert (ended["state"], ended["result"], ended["error"]) == ("SUCCESS", None, None)


@pytest_twisted.ensureDeferred
async def test_abort_waiting_job(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    first = await admin_client.call("core.job_test", {"sleep": 60, "lock": "L"})
    second = await admin_client.call("core.job_test", {"sleep": 1, "lock": "L"})
    assert (await record(admin_client, second))["state"] == "WAITING"
    await admin_client.call("core.job_abort", second)
    await events.state(second, "ABORTED")
    await admin_client.call("core.job_abort", first)
    await events.state(first, "ABORTED")


@pytest_twisted.ensureDeferred
async def test_abort_not_abortable_is_an_error(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    job_id = await admin_client.call("sample.exclusive", 60)
    await events.state(job_id, "RUNNING")
    with pytest.raises(ClientCallError) as error:
        await admin_client.call("core.job_abort", job_id)
    assert error.value.errname == "EINVAL"
    assert "not abortable" in error.value.reason
    assert (await record(admin_client, job_id))["state"] == "RUNNING"


@pytest_twisted.ensureDeferred
async def test_lock_runs_jobs_one_at_a_time_in_order(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    ids = [await admin_client.call("core.job_test", {"sleep": 0.1, "lock": "L"}) for _ in range(3)]
    other = await admin_client.call("core.job_test", {"sleep": 0.1, "lock": "M"})
    for job_id in ids:
        await events.state(job_id, "SUCCESS")
    await events.state(other, "SUCCESS")
    started = list(dict.fromkeys(id for msg, id, f in events.events if f["state"] == "RUNNING" and id in ids))
    finished = [id for msg, id, f in events.events if f["state"] == "SUCCESS" and id in ids]
    assert started == ids and finished == ids
    # Each started only after the one before it had finished.
    order = [(id, f["state"]) for msg, id, f in events.events if id in ids and f["state"] in ("RUNNING", "SUCCESS")]
    collapsed = [pair for i, pair in enumerate(order) if i == 0 or pair != order[i - 1]]
    assert collapsed == [(ids[0], "RUNNING"), (ids[0], "SUCCESS"), (ids[1], "RUNNING"), (ids[1], "SUCCESS"), (ids[2], "RUNNING"), (ids[2], "SUCCESS")]
    # A job under another lock did not wait for them.
    first_other_running = next(i for i, (msg, id, f) in enumerate(events.events) if id == other and f["state"] == "RUNNING")
    last_success = max(i for i, (msg, id, f) in enumerate(events.events) if id in ids and f["state"] == "SUCCESS")
    assert first_other_running < last_success


@pytest_twisted.ensureDeferred
async def test_lock_queue_size_returns_last_queued_job(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    running = await admin_client.call("core.job_test", {"sleep": 60, "lock": "Q"})
    await events.state(running, "RUNNING")
    queued = [await admin_client.call("core.job_test", {"sleep": 0, "lock": "Q"}) for _ in range(5)]
    assert len(set(queued)) == 5
    assert await admin_client.call("core.job_test", {"sleep": 0, "lock": "Q"}) == queued[-1]
    await admin_client.call("core.job_abort", running)
    for job_id in queued:
        await events.state(job_id, "SUCCESS")


@pytest_twisted.ensureDeferred
async def test_lock_queue_size_zero_is_busy(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    first = await admin_client.call("sample.exclusive", 0.2)
    with pytest.raises(ClientCallError) as error:
        await admin_client.call("sample.exclusive", 0.2)
    assert error.value.errname == "EBUSY"
    await events.state(first, "SUCCESS")
    second = await admin_client.call("sample.exclusive", 0)
    await events.state(second, "SUCCESS")


@pytest_twisted.ensureDeferred
async def test_wrap_mirrors_progress_and_returns_result(admin_client: Client) -> None:
    events = await subscribed(admin_client)
    parent = await admin_client.call("sample.async_nested", 1.2)
    done = await events.state(parent, "SUCCESS")
    assert done["result"] is True
    parent_percents = {f["progress"]["percent"] for msg, f in events.of(parent)}
    assert {83, 100} <= parent_percents


@pytest_twisted.ensureDeferred
async def test_thread_job_calls_and_wraps_another_job(admin_client: Client) -> None:
    result = await admin_client.call_job("sample.thread_nested", 0.1)
    assert result is True


@pytest_twisted.ensureDeferred
async def test_errors_keep_their_class_across_wait(admin_client: Client) -> None:
    assert await admin_client.call_job("sample.thread_nested_fail") == {
        "class": "CallError",
        "errmsg": "child failed",
    }
    assert await admin_client.call_job("sample.nested_invalid") == [["invalid_job.x", "Bad x", 22]]


@pytest_twisted.ensureDeferred
async def test_failed_job_record(admin_client: Client) -> None:
    job_id = await admin_client.call("sample.failing_job", "it broke")
    with pytest.raises(ClientCallError):
        await admin_client.call_job("core.job_wait", job_id)
    job = await record(admin_client, job_id)
    assert job["state"] == "FAILED"
    assert job["error"] == "[EINVAL] it broke"
    assert "Traceback" in job["exception"] and "it broke" in job["exception"]
    assert job["exc_info"]["type"] == "CallError"
    assert job["exc_info"]["errno"] == 22

    invalid = await admin_client.call("sample.invalid_job")
    with pytest.raises(ClientCallError):
        await admin_client.call_job("core.job_wait", invalid)
    job = await record(admin_client, invalid)
    assert job["exc_info"]["type"] == "VALIDATION"
    assert job["exc_info"]["extra"] == [["invalid_job.x", "Bad x", 22]]


@pytest_twisted.ensureDeferred
async def test_job_wait_mirrors_target(admin_client: Client) -> None:
    target = await admin_client.call("core.job_test", {"sleep": 0.3})
    assert await admin_client.call_job("core.job_wait", target) is True


@pytest_twisted.ensureDeferred
async def test_job_logs(admin_client: Client, daemon: Any) -> None:
    job_id = await admin_client.call("sample.logging_job", 30)
    assert await admin_client.call_job("core.job_wait", job_id) == 30
    job = await record(admin_client, job_id)
    assert job["logs_path"] == str(daemon.state_dir / "jobs" / f"{job_id}.log")
    with open(job["logs_path"]) as f:
        assert f.read().splitlines()[-1] == "line 29"
    excerpt = job["logs_excerpt"].splitlines()
    assert excerpt[:2] == ["line 0", "line 1"]
    assert excerpt[10] == "... 10 more lines ..."
    assert excerpt[-1] == "line 29"


@pytest_twisted.ensureDeferred
async def test_transient_job_sends_no_events_and_is_not_listed_once_ended(admin_client: Client) -> None:
    # Listed while it runs: test_compat_daemon.py.
    events = await subscribed(admin_client)
    admin_client_result = await admin_client.call("sample.transient_job")
    marker = await admin_client.call("core.job_test")
    await events.state(marker, "SUCCESS")
    assert [id for msg, id, f in events.events if id == admin_client_result] == []
    assert await admin_client.call("core.get_jobs", [["method", "=", "sample.transient_job"]]) == []


@pytest_twisted.ensureDeferred
async def test_description_from_arguments(admin_client: Client) -> None:
    job_id = await admin_client.call("sample.described", "bob")
    assert (await record(admin_client, job_id))["description"] == "Greeting bob"
    set_by_job = await admin_client.call("core.job_test", {"description": "working"})
    await admin_client.call_job("core.job_wait", set_by_job)
    assert (await record(admin_client, set_by_job))["description"] == "working"


@pytest_twisted.ensureDeferred
async def test_new_style_jobs_answer_with_the_result(admin_client: Client) -> None:
    await admin_client.call("core.set_options", {"legacy_jobs": False})
    assert await admin_client.call("core.job_test", {"sleep": 0.1}) is True
    with pytest.raises(ClientCallError) as error:
        await admin_client.call("sample.failing_job", "new style")
    assert error.value.reason == "new style"
    with pytest.raises(ClientValidationErrors):
        await admin_client.call("sample.invalid_job")


@pytest_twisted.ensureDeferred
async def test_bulk(admin_client: Client) -> None:
    statuses = await admin_client.call_job(
        "core.bulk", "sample.add", [[1, 2], [3, "x"], [4, 5]], "adding {0} and {1}"
    )
    assert statuses[0] == {"job_id": None, "result": 3, "error": None}
    assert statuses[1]["result"] is None and "Not a valid integer" in statuses[1]["error"]
    assert statuses[2] == {"job_id": None, "result": 9, "error": None}
    jobs = await admin_client.call_job("core.bulk", "core.job_test", [[{"sleep": 0}], [{"error": "no"}]])
    assert jobs[0]["result"] is True and isinstance(jobs[0]["job_id"], int)
    assert jobs[1]["error"] == "no"


@pytest_twisted.ensureDeferred
async def test_get_methods(admin_client: Client) -> None:
    methods = await admin_client.call("core.get_methods")
    job_test = methods["core.job_test"]
    assert job_test["job"] is True
    assert job_test["job_options"]["abortable"] is True
    assert "progress" in job_test["description"]
    assert methods["core.ping"]["no_auth_required"] is True
    assert "sample.secret" not in methods
    await admin_client.call("core.set_options", {"private_methods": True})
    assert "sample.secret" in await admin_client.call("core.get_methods")


@pytest_twisted.ensureDeferred
async def test_jobs_survive_their_client_disconnecting(daemon: Any, admin_client: Client) -> None:
    other = await connect(daemon.ws_url, reactor=reactor)
    assert await other.login(*ADMIN)
    job_id = await other.call("core.job_test", {"sleep": 0.3})
    await other.close()
    assert await admin_client.call_job("core.job_wait", job_id) is True


@pytest_twisted.ensureDeferred
async def test_queries_over_jobs(admin_client: Client) -> None:
    for i in range(3):
        await admin_client.call_job("core.job_test", {"description": f"job {i}"})
    assert await admin_client.call("core.get_jobs", [], {"count": True}) == 3
    rows = await admin_client.call(
        "core.get_jobs",
        [["description", "^", "job"], ["progress.percent", "=", 100]],
        {"order_by": ["-id"], "select": ["id", "description"], "limit": 2},
    )
    assert rows == [{"id": 3, "description": "job 2"}, {"id": 2, "description": "job 1"}]
    with pytest.raises(ClientCallError) as error:
        await admin_client.call("core.get_jobs", [["id", "=", 99]], {"get": True})
    assert error.value.errname == "ENOENT"


@pytest.fixture
def settings(settings: Any) -> Any:
    return attrs.evolve(settings, keep_finished_jobs=5)


@pytest_twisted.ensureDeferred
async def test_only_the_newest_finished_jobs_are_kept_in_memory(admin_client: Client, daemon: Any) -> None:
    for _ in range(8):
        await admin_client.call_job("core.job_test")
    assert [job.id for job in daemon.middleware.jobs] == [4, 5, 6, 7, 8]
    # The older ones are still listed, from the job history.
    ids = [job["id"] for job in await admin_client.call("core.get_jobs")]
    assert ids == [1, 2, 3, 4, 5, 6, 7, 8]
