"""
Webhooks across a crash: C{twistd -n midjobs} killed with SIGKILL while a
delivery waits for the receiver's answer, and restarted on the same state
directory, delivers the notification (same delivery id) after the restart,
without job history too (the outbox lives in C{midjobs.db} regardless).
"""

from __future__ import annotations

from pathlib import Path

import pytest_twisted

from midjobs.notify import DELIVERY_HEADER

from test_restart import kill, local_client, stop
from test_twistd import twistd
from test_webhooks import HANG, SECRET, Receivers, receivers  # noqa: F401 (the fixture)


def start(state: Path, socket: Path, config: Path, cwd: Path):  # type: ignore[no-untyped-def]
    return twistd(
        "--config", str(config),
        "--state-dir", str(state),
        "--listen", "tcp:0:interface=127.0.0.1",
        "--socket", str(socket),
        path=cwd,
    )  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_a_notification_under_way_when_the_daemon_is_killed_is_delivered_after_the_restart(
    receivers: Receivers, tmp_path: Path, short_tmp: Path  # noqa: F811 (the fixture)
) -> None:
    hook = receivers.add("hook", [HANG])
    config = tmp_path / "midjobs.toml"
    config.write_text(
        f"""
[jobs]
history = false

[notify]
retry_delay = 0.05
webhooks = [{{ url = "{receivers.url('hook')}", secret = "{SECRET}", timeout = 60 }}]
"""
    )
    state, socket = tmp_path / "state", short_tmp / "s.sock"
    process = start(state, socket, config, tmp_path)
    await process.ready
    client = await local_client(socket)
    try:
        job_id = await client.call("core.job_test", {"description": "before the crash"})
        # The first attempt waits for an answer that never comes.
        await hook.received(1)
    finally:
        await client.close()
    await kill(process)

    process = start(state, socket, config, tmp_path)
    try:
        await process.ready
        await hook.received(2)
    finally:
        await stop(process)
    first, second = hook.requests
    assert second.signed
    assert first.headers[DELIVERY_HEADER] == second.headers[DELIVERY_HEADER]
    job = second.json["job"]
    assert (job["id"], job["state"], job["description"]) == (job_id, "SUCCESS", "before the crash")
    assert b"1 webhook notification(s) pending from before the start" in process.output
