"""
midclt as a user runs it: a subprocess against a live daemon.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue

from conftest import ADMIN, subprocess_env

#: The console script the package installs, beside this Python.
MIDCLT = str(Path(sys.executable).parent / "midclt")


async def midclt(*args: str, stdin: bytes = b"") -> tuple[str, str, int]:
    """
    Run midclt; return its stdout, stderr and exit code.
    """
    out, err, code = await getProcessOutputAndValue(
        MIDCLT, args, env=subprocess_env(), reactor=reactor, stdinBytes=stdin
    )
    return out.decode(), err.decode(), code


def logged_in(daemon: Any) -> list[str]:
    return ["-u", daemon.ws_url, "-U", ADMIN[0], "-P", ADMIN[1]]


@pytest.fixture
def admin(admin_client: Any) -> Any:
    """
    The admin user exists (made by admin_client).
    """
    return admin_client


@pytest_twisted.ensureDeferred
async def test_call_job_draws_progress_and_prints_result(daemon: Any, admin: Any) -> None:
    out, err, code = await midclt(*logged_in(daemon), "call", "--job", "core.job_test", '{"sleep": 1.5}')
    assert code == 0, err
    assert out == "True\n"
    lines = err.splitlines()
    assert "Status: (none)" in lines
    assert "Total Progress: [" + "#" * 40 + "] 100.00%" in lines
    assert any(line.startswith("Total Progress: [" + "#" * 26 + "_" * 14 + "] 66.") for line in lines)


@pytest_twisted.ensureDeferred
async def test_call_prints_job_id_without_job_flag(daemon: Any, admin: Any) -> None:
    out, err, code = await midclt(*logged_in(daemon), "call", "core.job_test")
    assert code == 0, err
    assert out == "1\n"


@pytest_twisted.ensureDeferred
async def test_unix_socket_needs_no_login(daemon: Any) -> None:
    out, err, code = await midclt(
        "-u", daemon.unix_url, "call", "user.create",
        '{"username": "bob", "password": "pw-bob", "roles": ["FULL_ADMIN"]}',
    )
    assert code == 0, err
    assert '"username": "bob"' in out and "pw-bob" not in out
    out, err, code = await midclt("-u", daemon.unix_url, "call", "core.get_jobs", "[]", '{"count": true}')
    assert (out, code) == ("0\n", 0)


@pytest_twisted.ensureDeferred
async def test_ping_and_plain_results(daemon: Any, admin: Any) -> None:
    assert await midclt("-u", daemon.ws_url, "ping") == ("pong\n", "", 0)
    out, err, code = await midclt(*logged_in(daemon), "call", "sample.echo", "plain words")
    assert (out, code) == ("plain words\n", 0)
    out, err, code = await midclt(*logged_in(daemon), "call", "sample.echo", '{"a": [1, 2]}')
    assert (out, code) == ('{"a": [1, 2]}\n', 0)
    out, err, code = await midclt(*logged_in(daemon), "call", "sample.echo", "-", stdin=b'[true, null]\n')
    assert (out, code) == ("[true, null]\n", 0)



@pytest_twisted.ensureDeferred
async def test_null_result_prints_null(daemon: Any, admin: Any) -> None:
    # As the original midclt: json.dumps(None).
    assert await midclt(*logged_in(daemon), "call", "sample.echo", "null") == ("null\n", "", 0)
    assert await midclt(*logged_in(daemon), "call", "sample.echo") == ("null\n", "", 0)
    out, err, code = await midclt(*logged_in(daemon), "call", "sample.echo", "1.5")
    assert (out, code) == ("1.5\n", 0)


@pytest_twisted.ensureDeferred
async def test_quiet_hides_the_errors_of_the_call_not_the_result(daemon: Any, admin: Any) -> None:
    # As the original midclt: -q silences a failed call (the status still says it), never a result.
    assert await midclt(*logged_in(daemon), "call", "-q", "sample.echo", "7") == ("7\n", "", 0)
    assert await midclt(*logged_in(daemon), "call", "-q", "sample.fail", "went wrong") == ("", "", 1)
    out, err, code = await midclt(*logged_in(daemon), "call", "-q", "--job", "sample.failing_job", "job broke")
    assert (out, code) == ("", 1)
    assert "job broke" not in err and "Traceback" not in err
    assert await midclt("-u", daemon.ws_url, "call", "-q", "core.get_jobs") == ("", "", 1)
    # Connecting and logging in are not the call: they still say what went wrong.
    out, err, code = await midclt("-u", daemon.ws_url, "-U", ADMIN[0], "-P", "wrong", "call", "-q", "core.ping")
    assert code == 1 and "Failed to log in" in err


@pytest_twisted.ensureDeferred
async def test_quiet_still_reports_a_missing_daemon(short_tmp: Any) -> None:
    out, err, code = await midclt("-u", f"ws+unix://{short_tmp}/nothing.sock", "call", "-q", "core.ping")
    assert code == 1
    assert err.strip() == "Failed to run middleware call. Daemon not running?"


@pytest_twisted.ensureDeferred
async def test_errors_exit_1_with_the_reason(daemon: Any, admin: Any) -> None:
    out, err, code = await midclt(*logged_in(daemon), "call", "sample.fail", "went wrong")
    assert code == 1 and out == ""
    assert "went wrong" in err
    out, err, code = await midclt(*logged_in(daemon), "call", "--job", "sample.failing_job", "job broke")
    assert code == 1 and "job broke" in err and "Traceback" in err
    out, err, code = await midclt("-u", daemon.ws_url, "call", "core.get_jobs")
    assert code == 1 and "Not authenticated" in err
    out, err, code = await midclt("-u", daemon.ws_url, "-U", ADMIN[0], "-P", "wrong", "call", "core.ping")
    assert code == 1 and err


@pytest_twisted.ensureDeferred
async def test_no_daemon(short_tmp: Any) -> None:
    out, err, code = await midclt("-u", f"ws+unix://{short_tmp}/nothing.sock", "call", "core.ping")
    assert code == 1
    assert err.strip() == "Failed to run middleware call. Daemon not running?"


@pytest_twisted.ensureDeferred
async def test_job_print_description(daemon: Any, admin: Any) -> None:
    out, err, code = await midclt(
        *logged_in(daemon), "call", "--job", "--job-print", "description", "sample.thread_job", "3"
    )
    assert code == 0, err
    assert out == "done\n"
    assert [line for line in err.splitlines() if line.startswith("step")] == ["step 1", "step 2", "step 3"]


@pytest_twisted.ensureDeferred
async def test_subscribe_prints_events(daemon: Any, admin_client: Any, monkeypatch: Any) -> None:
    hub = daemon.middleware.events
    subscribed: Deferred[None] = Deferred()

    def subscribe(subscriber: Any, name: str) -> str:
        subscription_id = type(hub).subscribe(hub, subscriber, name)
        if not subscribed.called:
            subscribed.callback(None)
        return subscription_id

    monkeypatch.setattr(hub, "subscribe", subscribe)
    watching = Deferred.fromCoroutine(midclt(*logged_in(daemon), "subscribe", "-n", "2", "core.get_jobs"))
    await subscribed
    await admin_client.call("core.job_test")
    out, err, code = await watching
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["msg"] for e in events] == ["added", "changed"]
    assert events[0]["collection"] == "core.get_jobs" and events[0]["fields"]["state"] == "WAITING"


@pytest_twisted.ensureDeferred
async def test_subscribe_follows_a_job_log(daemon: Any, admin_client: Any) -> None:
    job_id = await admin_client.call("sample.logging_job", 3)
    await admin_client.call_job("core.job_wait", job_id)
    out, err, code = await midclt(*logged_in(daemon), "subscribe", "-n", "1", f"core.job_log:{job_id}")
    assert code == 0, err
    [event] = [json.loads(line) for line in out.splitlines()]
    assert event["collection"] == f"core.job_log:{job_id}"
    assert event["fields"] == {"data": "line 0\nline 1\nline 2\n"}


@pytest_twisted.ensureDeferred
async def test_documented_roundtrip_script(daemon: Any, admin: Any, tmp_path: Path) -> None:
    """
    The complete script in docs/scripting.rst works as printed.
    """
    local = tmp_path / "backup.tar"
    local.write_bytes(bytes(range(256)) * 40_000)
    remote = daemon.state_dir / "files" / "backup.tar"
    script = str(Path(__file__).parent.parent / "docs" / "examples" / "roundtrip.py")
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        [script, daemon.http_url, *ADMIN, str(local), str(remote)],
        env=subprocess_env(),
        reactor=reactor,
    )
    assert code == 0, err
    assert out.decode().splitlines() == [
        f"uploaded {local.stat().st_size} bytes to {remote}",
        f"downloaded {local.stat().st_size} bytes (job 3); identical: True",
    ]
    assert remote.read_bytes() == local.read_bytes()


# The transfer figures after the bar (midjobs.client._progress), as units.


def test_transfer_figures_formatting() -> None:
    from midjobs.client._progress import format_duration, format_size, transfer_text

    assert [format_size(n) for n in (0, 1023, 1024, 1536, 12.345 * 2**20, 512 * 2**20, 2**30 - 1, 2**30)] == [
        "0 B", "1023 B", "1 KiB", "1.5 KiB", "12.3 MiB", "512 MiB", "1 GiB", "1 GiB",
    ]
    assert [format_duration(s) for s in (0, 0.2, 3, 59.5, 125, 3600, 3840)] == [
        "0 s", "1 s", "3 s", "1 min", "2 min 5 s", "1 h", "1 h 4 min",
    ]
    full = {"bytes": 512 * 2**20, "total_bytes": 2**30, "rate": 180_000_000, "eta_seconds": 2.9}
    assert transfer_text(full) == "512 MiB of 1 GiB, 172 MiB/s, 3 s left"
    assert transfer_text({"bytes": 5 * 2**20, "rate": 2**20}) == "5 MiB, 1 MiB/s"
    assert transfer_text({"bytes": 10, "total_bytes": 10, "eta_seconds": 0, "step": 3}) == "10 B of 10 B, 0 s left"
    # Only a job's extra that carries a numeric bytes has figures.
    for extra in (None, [1], {"step": 3}, {"bytes": "many"}, {"bytes": True}, {"bytes": -1}):
        assert transfer_text(extra) is None
    assert transfer_text({"bytes": 1, "rate": "fast", "eta_seconds": float("nan")}) == "1 B"


def test_progress_line_with_transfer_figures() -> None:
    import io

    from midjobs.client._progress import ProgressDisplay, progress_lines

    assert progress_lines("Copying", 50.0, "512 MiB of 1 GiB") == (
        "Status: Copying",
        "Total Progress: [" + "#" * 20 + "_" * 20 + "] 50.00%  512 MiB of 1 GiB",
    )
    stream = io.StringIO()
    display = ProgressDisplay(stream, tty=False)
    job = {"progress": {"percent": 25, "description": "Copying", "extra": {"bytes": 2**20, "total_bytes": 2**22}}}
    display(job)
    # The same figures draw nothing new; new ones do.
    display(job)
    job = {"progress": {"percent": 25, "description": "Copying", "extra": {"bytes": 2**21, "total_bytes": 2**22}}}
    display(job)
    display.finish(success=True)
    assert stream.getvalue().splitlines() == [
        "Status: Copying",
        "Total Progress: [" + "#" * 10 + "_" * 30 + "] 25.00%  1 MiB of 4 MiB",
        "Status: Copying",
        "Total Progress: [" + "#" * 10 + "_" * 30 + "] 25.00%  2 MiB of 4 MiB",
        "Status: Copying",
        "Total Progress: [" + "#" * 40 + "] 100.00%  2 MiB of 4 MiB",
    ]
