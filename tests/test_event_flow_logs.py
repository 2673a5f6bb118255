"""
Log events read the log file off the reactor thread, in bounded pieces, and
a subscriber gets a running job's log whole and in order: what was there
when it subscribed, then each piece once.
"""

from __future__ import annotations

import builtins
import threading
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue

from midjobs import log_events
from midjobs.client import Client, connect
from midjobs.job import Job
from midjobs.service import Service, job

from conftest import ADMIN

#: The test tells the writer when to write its next line.
STEPS: DeferredQueue[None] = DeferredQueue()


class LogWriter(Service):
    namespace = "logflow"

    @job(logs=True)
    async def writer(self, job: Job, lines: int) -> int:
        for i in range(lines):
            await STEPS.get()
            job.logs_fd.write(f"line {i} {'é' * 3}\n".encode())
        return lines


def record_opens(monkeypatch: Any) -> list[bool]:
    """
    Whether each file log_events opens is opened on the reactor (main) thread.
    """
    on_reactor: list[bool] = []

    def recording_open(*args: Any, **kwargs: Any) -> Any:
        on_reactor.append(threading.current_thread() is threading.main_thread())
        return builtins.open(*args, **kwargs)

    monkeypatch.setattr(log_events, "open", recording_open, raising=False)
    return on_reactor


class Follow:
    """
    What one subscriber of a log receives.
    """

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._waiting: list[tuple[str, Deferred[None]]] = []

    def event(self, msg: str, collection: str, id: Any, fields: Any) -> None:
        self.texts.append(fields["data"])
        for expected, d in list(self._waiting):
            if self.text.endswith(expected):
                self._waiting.remove((expected, d))
                d.callback(None)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def ends_with(self, expected: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.text.endswith(expected):
            d.callback(None)
        else:
            self._waiting.append((expected, d))
        return d.addTimeout(10, reactor)


def line(i: int) -> str:
    return f"line {i} {'é' * 3}\n"


@pytest_twisted.ensureDeferred
async def test_a_finished_jobs_log_is_read_off_the_reactor(admin_client: Client, monkeypatch: Any) -> None:
    on_reactor = record_opens(monkeypatch)
    job_id = await admin_client.call("sample.logging_job", 30)
    await admin_client.call_job("core.job_wait", job_id)
    follow = Follow()
    await admin_client.subscribe(f"core.job_log:{job_id}", follow.event)
    await follow.ends_with("line 29\n")
    assert follow.text == "".join(f"line {i}\n" for i in range(30))
    assert on_reactor and not any(on_reactor), on_reactor


@pytest_twisted.ensureDeferred
async def test_a_running_jobs_log_in_order_off_the_reactor(daemon: Any, admin_client: Client, monkeypatch: Any) -> None:
    """
    Two subscribers, one from the start and one midway, each get the log
    from where they came in, each line once, in order.
    """
    daemon.middleware.add_service(LogWriter)
    on_reactor = record_opens(monkeypatch)
    job_id = await admin_client.call("logflow.writer", 6)
    first, second = Follow(), Follow()
    await admin_client.subscribe(f"core.job_log:{job_id}", first.event)
    for i in range(3):
        STEPS.put(None)
        await first.ends_with(line(i))
    other = await connect(daemon.ws_url, reactor=reactor)
    try:
        assert await other.login(*ADMIN)
        await other.subscribe(f"core.job_log:{job_id}", second.event)
        for i in range(3, 6):
            STEPS.put(None)
            await first.ends_with(line(i))
            await second.ends_with(line(i))
    finally:
        await other.close()
    await admin_client.call_job("core.job_wait", job_id)
    assert first.text == "".join(line(i) for i in range(6))
    assert second.text == "".join(line(i) for i in range(6))
    assert on_reactor and not any(on_reactor), on_reactor


def test_reads_are_bounded(tmp_path: Any) -> None:
    """
    One read takes at most C{_READ_SIZE} bytes, and never half a character.
    """
    path = tmp_path / "log"
    path.write_bytes(b"a" * (log_events._READ_SIZE - 1) + "é".encode() + b"tail")
    text, used = log_events._read_from(str(path), 0)
    assert used == log_events._READ_SIZE - 1 and text == "a" * used
    text, used = log_events._read_from(str(path), used)
    assert text == "étail"
    assert log_events._end_offset(str(path)) == path.stat().st_size
    with open(path, "ab") as f:
        f.write("é".encode()[:1])
    assert log_events._end_offset(str(path)) == path.stat().st_size - 1
    backlog = log_events._read_backlog(str(path), path.stat().st_size - 1)
    assert len(backlog.encode()) <= log_events.MAX_BACKLOG
