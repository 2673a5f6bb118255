"""
The transfer fields of C{progress.extra} over a real daemon: an upload read
slowly by its job, a download of C{filesystem.get} read slowly by its
client, and C{midclt} showing them after its progress bar.
"""

from __future__ import annotations

import io
import re
import socket
import time
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred

from conftest import ADMIN
from midjobs import transfer_progress
from midjobs.client import upload
from test_midclt import logged_in, midclt

KiB = 1024
MiB = 1024 * KiB


@pytest.fixture
def settings(settings: Any) -> Any:
    return attrs.evolve(settings, plugins=(*settings.plugins, "progress_rate_services"))


@pytest.fixture(autouse=True)
def quick_updates(monkeypatch: Any) -> None:
    """
    Ten updates a second instead of one, so that a short transfer shows a few.
    """
    monkeypatch.setattr(transfer_progress, "UPDATE_INTERVAL", 0.1)


class JobEvents:
    """
    The C{progress.extra} of each event of one job, and its end.
    """

    def __init__(self) -> None:
        self.job_id: int | None = None
        self.early: list[dict[str, Any]] = []
        self.extras: list[Any] = []
        self.ended: Deferred[str] = Deferred()

    def __call__(self, msg: str, collection: str, id: Any, fields: Any) -> None:
        if not isinstance(fields, dict):
            return
        if self.job_id is None:
            self.early.append({"id": id, **fields})
            return
        if id == self.job_id:
            self._take(fields)

    def follow(self, job_id: int) -> None:
        self.job_id = job_id
        for fields in self.early:
            if fields["id"] == job_id:
                self._take(fields)
        self.early = []

    def _take(self, fields: dict[str, Any]) -> None:
        progress = fields.get("progress")
        if progress is not None:
            self.extras.append(progress.get("extra"))
        state = fields.get("state")
        if state in ("SUCCESS", "FAILED", "ABORTED") and not self.ended.called:
            self.ended.callback(state)

    def transfers(self) -> list[dict[str, Any]]:
        """
        The extras that carry transfer fields, changes only.
        """
        seen: list[dict[str, Any]] = []
        for extra in self.extras:
            if isinstance(extra, dict) and "bytes" in extra and (not seen or seen[-1] != extra):
                seen.append(extra)
        return seen


def check_transfer(seen: list[dict[str, Any]], size: int, seconds: float) -> None:
    """
    Bytes never go back and reach C{size}; the total is C{size} (within the
    multipart overhead while an upload streams); the rate is of the order of
    C{size / seconds} (within a factor of 2.5); the time left falls to 0.
    """
    assert len(seen) >= 4, seen
    positions = [extra["bytes"] for extra in seen]
    assert positions == sorted(positions), positions
    assert positions[-1] == size
    totals = [extra["total_bytes"] for extra in seen]
    assert all(size <= total <= size + KiB for total in totals), totals
    assert totals[-1] == size
    rates = [extra["rate"] for extra in seen if "rate" in extra]
    assert len(rates) >= 3, seen
    average = size / seconds
    assert average / 2.5 < rates[-1] < average * 2.5, (rates, average)
    etas = [extra["eta_seconds"] for extra in seen if "eta_seconds" in extra]
    assert etas[-1] == 0
    assert etas[0] > 0.2, etas
    # Falling, give or take the wobble of a moving average on a busy machine.
    assert all(later <= earlier * 1.25 + 0.1 for earlier, later in zip(etas, etas[1:])), etas


@pytest_twisted.ensureDeferred
async def test_upload_read_slowly(daemon: Any, admin_client: Any) -> None:
    # The upload runs ahead of the job by what one socket read and the pipe
    # hold (about 1.25 MiB): a few times that, so the rate is the job's.
    size = 12 * MiB
    events = JobEvents()
    await admin_client.subscribe("core.get_jobs", events)
    started = time.monotonic()
    # 128 KiB every 10 ms: about 12 MiB/s at most.
    answer = await upload(
        daemon.http_url, "rate.slow_read", [128 * KiB, 0.01], [("big.bin", io.BytesIO(b"u" * size))], auth=ADMIN
    )
    events.follow(answer["job_id"] if isinstance(answer, dict) else answer)
    assert await events.ended.addTimeout(30, reactor) == "SUCCESS"
    check_transfer(events.transfers(), size, time.monotonic() - started)


def slow_get(port: int, path: str, per_read: float) -> int:
    """
    GET C{path} on a socket with a small receive buffer, reading 32 KiB at
    most each C{per_read} seconds; the number of bytes received.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * KiB)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        received = 0
        while data := sock.recv(32 * KiB):
            received += len(data)
            time.sleep(per_read)
        return received


@pytest_twisted.ensureDeferred
async def test_download_read_slowly(daemon: Any, admin_client: Any) -> None:
    # The job runs ahead of the client by the pipe and the sockets' buffers
    # (a few MiB on the loopback): a few times that, so the rate is the client's.
    size = 16 * MiB + 123
    root = daemon.state_dir / "files"
    (root / "big.bin").write_bytes(b"d" * size)
    events = JobEvents()
    await admin_client.subscribe("core.get_jobs", events)
    job_id, url = await admin_client.call("core.download", "filesystem.get", [str(root / "big.bin")], "big.bin")
    events.follow(job_id)
    started = time.monotonic()
    received = await threads.deferToThread(slow_get, daemon.port, url, 0.002)
    assert received > size
    assert await events.ended.addTimeout(30, reactor) == "SUCCESS"
    check_transfer(events.transfers(), size, time.monotonic() - started)


@pytest_twisted.ensureDeferred
async def test_midclt_shows_the_transfer_after_the_bar(daemon: Any, admin_client: Any) -> None:
    out, err, code = await midclt(
        *logged_in(daemon), "call", "--job", "rate.counted", str(2 * MiB), str(128 * KiB), "0.03"
    )
    assert code == 0, err
    assert out == f"{2 * MiB}\n"
    bars = [line for line in err.splitlines() if line.startswith("Total Progress:")]
    shown = [re.search(r"%  (.*)$", line) for line in bars]
    figures = [match.group(1) for match in shown if match]
    assert figures, err
    pattern = re.compile(r"^\d[\d.]* (B|KiB|MiB) of 2 MiB(, \d[\d.]* (B|KiB|MiB)/s)?(, \d+ s left)?$")
    assert all(pattern.match(text) for text in figures), figures
    assert any(", " in text and "/s" in text and "left" in text for text in figures), figures
    assert figures[-1].startswith("2 MiB of 2 MiB") and figures[-1].endswith(", 0 s left")
