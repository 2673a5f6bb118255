"""
The porting guide's plugin (docs/porting.rst): C{original_replica.py} is a
plugin in the original middlewared's style, C{ported_replica.py} its port.

The port is loaded into a real daemon and each of its jobs runs through the
real C{midclt} (with C{curl} for the upload and the download, as the guide
shows) and through L{midjobs.client} (C{call_job}, the treq C{upload} and
C{download} helpers).  A last test holds the guide to its word: the two files
differ in exactly the lines the guide's diff blocks list.
"""

from __future__ import annotations

import difflib
import errno
import io
import json
import logging
import re
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue

from conftest import ADMIN, TESTS, subprocess_env
from midjobs.client import (
    ClientCallError,
    ClientValidationErrors,
    UploadError,
    download,
    upload,
)

ORIGINAL = TESTS / "original_replica.py"
PORTED = TESTS / "ported_replica.py"
GUIDE = TESTS.parent / "docs" / "porting.rst"
MIDCLT = str(Path(sys.executable).parent / "midclt")


@pytest.fixture
def settings(settings: Any) -> Any:
    return attrs.evolve(settings, plugins=(*settings.plugins, "ported_replica"))


@pytest.fixture
def mnt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """
    The plugin's mountpoint root, with the dataset C{tank/src} (three files).
    """
    root = tmp_path / "mnt"
    source = root / "tank" / "src"
    (source / "docs").mkdir(parents=True)
    (source / "a.txt").write_bytes(b"alpha\n")
    (source / "docs" / "b.txt").write_bytes(b"bravo\n" * 1000)
    (source / "docs" / "c.bin").write_bytes(bytes(range(256)) * 64)
    monkeypatch.setenv("REPLICA_MOUNTPOINT_ROOT", str(root))
    return root


SOURCE_FILES = {"a.txt": b"alpha\n", "docs/b.txt": b"bravo\n" * 1000, "docs/c.bin": bytes(range(256)) * 64}


def files_of(path: Path) -> dict[str, bytes]:
    """
    The files under C{path} by relative path, snapshots left out.
    """
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and ".zfs" not in p.relative_to(path).parts
    }


def tar_files(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def timeout(d: Deferred[Any], seconds: float = 30) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


async def run(executable: str, *args: str) -> tuple[str, str, int]:
    out, err, code = await timeout(
        getProcessOutputAndValue(executable, args, env=subprocess_env(), reactor=reactor)
    )
    return out.decode(), err.decode(), code


async def midclt(daemon: Any, *args: str) -> tuple[str, str, int]:
    return await run(MIDCLT, "-u", daemon.ws_url, "-U", ADMIN[0], "-P", ADMIN[1], *args)


async def record(client: Any, job_id: int) -> dict[str, Any]:
    return await client.call("core.get_jobs", [["id", "=", job_id]], {"get": True})


# -- The guide's claim --------------------------------------------------------


def guide_diff_lines() -> list[str]:
    """
    The C{-} and C{+} lines of the guide's C{code-block:: diff} blocks.
    """
    lines: list[str] = []
    in_block = False
    for line in GUIDE.read_text().splitlines():
        if line.startswith(".. code-block:: diff"):
            in_block = True
            continue
        if in_block and line and not line.startswith(" "):
            in_block = False
        if in_block and line.startswith("   ") and line[3:4] in ("-", "+"):
            lines.append(line[3:])
    return lines


def test_the_port_changes_only_the_lines_the_guide_lists() -> None:
    original = ORIGINAL.read_text().splitlines()
    ported = PORTED.read_text().splitlines()
    changed = [
        line
        for line in difflib.unified_diff(original, ported, lineterm="", n=0)
        if line[:1] in ("-", "+") and not line.startswith(("---", "+++"))
    ]
    assert changed, "the port changes nothing?"
    assert sorted(changed) == sorted(guide_diff_lines())
    # What changes is the imports, and with them the base class: nothing else.
    assert all(re.match(r"[-+](import |from )", line) for line in changed), changed
    assert "middlewared" not in PORTED.read_text()


# -- Plain calls ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_dataset_info_and_its_errors(daemon: Any, admin_client: Any, mnt: Path) -> None:
    out, err, code = await midclt(daemon, "call", "replica.dataset_info", "tank/src")
    assert code == 0, err
    info = json.loads(out)
    assert info == {
        "name": "tank/src",
        "mountpoint": str(mnt / "tank" / "src"),
        "files": 3,
        "used": sum(map(len, SOURCE_FILES.values())),
        "snapshots": [],
    }
    out, err, code = await midclt(daemon, "call", "replica.dataset_info", "tank/none")
    assert code == 1 and "Dataset 'tank/none' does not exist" in err
    with pytest.raises(ClientCallError) as raised:
        await admin_client.call("replica.dataset_info", "tank/none")
    assert raised.value.errno == errno.ENOENT
    with pytest.raises(ClientValidationErrors) as invalid:
        await admin_client.call("replica.dataset_info", "../etc")
    assert "replica_dataset_info.dataset" in str(invalid.value)


# -- A locked job with progress, logs, a wrapped sub-job ------------------------


@pytest_twisted.ensureDeferred
async def test_run_through_midclt(daemon: Any, admin_client: Any, mnt: Path) -> None:
    out, err, code = await midclt(daemon, "call", "--job", "replica.run", "tank/src", "tank/dst", '{"snapshot": "s1"}')
    assert code == 0, err
    assert json.loads(out) == {"snapshot": "s1", "files": 3, "bytes": 22390, "deleted": 0}
    assert "Total Progress: [" + "#" * 40 + "] 100.00%" in err.splitlines()
    assert files_of(mnt / "tank" / "dst") == SOURCE_FILES
    assert files_of(mnt / "tank" / "src" / ".zfs" / "snapshot" / "s1") == SOURCE_FILES

    out, err, code = await midclt(daemon, "call", "core.get_jobs", '[["method", "=", "replica.run"]]', '{"get": true}')
    job = json.loads(out)
    assert job["description"] == "Replicating tank/src@s1 to tank/dst"
    assert job["progress"] == {"percent": 100, "description": "tank/dst is at tank/src@s1", "extra": None}
    assert job["logs_excerpt"].splitlines() == [
        "copied a.txt (6 bytes)", "copied docs/b.txt (6000 bytes)", "copied docs/c.bin (16384 bytes)"
    ]

    # A second run deletes what the source no longer has; the snapshot name is taken.
    (mnt / "tank" / "src" / "a.txt").unlink()
    out, err, code = await midclt(daemon, "call", "--job", "replica.run", "tank/src", "tank/dst")
    assert code == 0, err
    result = json.loads(out)
    assert result["snapshot"].startswith("auto-") and result["deleted"] == 1
    assert "a.txt" not in files_of(mnt / "tank" / "dst")
    out, err, code = await midclt(daemon, "call", "--job", "replica.run", "tank/src", "tank/dst", '{"snapshot": "s1"}')
    assert code == 1 and "Snapshot tank/src@s1 already exists" in err


@pytest_twisted.ensureDeferred
async def test_run_through_the_client(
    daemon: Any, admin_client: Any, mnt: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ported_replica")
    seen: list[dict[str, Any]] = []
    result = await timeout(
        admin_client.call_job("replica.run", "tank/src", "backup/src", {"delete": False}, callback=seen.append)
    )
    assert result["files"] == 3 and result["deleted"] == 0
    assert files_of(mnt / "backup" / "src") == SOURCE_FILES
    # Progress events are throttled: the last one always comes.
    assert seen[-1]["progress"] == {"percent": 100, "description": "backup/src is at " + f"tank/src@{result['snapshot']}", "extra": None}
    snapshot = await admin_client.call("core.get_jobs", [["method", "=", "replica.snapshot"]], {"get": True})
    assert (snapshot["arguments"], snapshot["state"], snapshot["result"]) == (["tank/src", None], "SUCCESS", result["snapshot"])
    assert snapshot["progress"]["description"] == f"Snapshot tank/src@{result['snapshot']} taken"
    # self.logger, a logging logger in the port.
    assert f"Replicated tank/src@{result['snapshot']} to backup/src: 3 files" in caplog.messages

    job_id = seen[-1]["id"]
    url = await admin_client.call("core.job_download_logs", job_id, "run.log")
    logs = io.BytesIO()
    await timeout(download(daemon.http_url, url, logs, reactor=reactor))
    assert logs.getvalue() == b"copied a.txt (6 bytes)\ncopied docs/b.txt (6000 bytes)\ncopied docs/c.bin (16384 bytes)\n"

    with pytest.raises(ClientValidationErrors) as invalid:
        await admin_client.call_job("replica.run", "tank/src", "tank/src")
    assert "Source and target must be different datasets" in str(invalid.value)
    # The wrapped sub-job's CallError is the run's.
    with pytest.raises(ClientCallError) as missing:
        await admin_client.call_job("replica.run", "tank/none", "tank/dst")
    assert missing.value.errno == errno.ENOENT and "does not exist" in str(missing.value)


# -- The download ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_send_downloaded_with_the_client(daemon: Any, admin_client: Any, mnt: Path) -> None:
    job_id, url = await admin_client.call("core.download", "replica.send", ["tank/src"], "src.tar")
    body = io.BytesIO()
    await timeout(download(daemon.http_url, url, body, reactor=reactor))
    assert tar_files(body.getvalue()) == SOURCE_FILES
    assert await timeout(admin_client.call_job("core.job_wait", job_id)) == {"files": 3, "bytes": 22390}
    job = await record(admin_client, job_id)
    assert job["progress"]["percent"] == 100 and job["progress"]["description"] == "Sent docs/c.bin"


@pytest_twisted.ensureDeferred
async def test_send_through_midclt_and_curl(daemon: Any, admin_client: Any, mnt: Path, tmp_path: Path) -> None:
    out, err, code = await midclt(daemon, "call", "core.download", "replica.send", '["tank/src"]', "src.tar")
    assert code == 0, err
    job_id, url = json.loads(out)
    target = tmp_path / "src.tar"
    out, err, code = await run("curl", "-sSf", "-o", str(target), daemon.http_url + url)
    assert code == 0, err
    assert tar_files(target.read_bytes()) == SOURCE_FILES
    out, err, code = await midclt(daemon, "call", "--job", "core.job_wait", str(job_id))
    assert (code, json.loads(out)) == (0, {"files": 3, "bytes": 22390}), err

    # check_pipes=False: without core.download the job writes to options.path, or says the pipe is missing.
    local = tmp_path / "local.tar"
    out, err, code = await midclt(daemon, "call", "--job", "replica.send", "tank/src", json.dumps({"path": str(local)}))
    assert code == 0, err
    assert tar_files(local.read_bytes()) == SOURCE_FILES
    out, err, code = await midclt(daemon, "call", "--job", "replica.send", "tank/src")
    assert code == 1 and "Pipe 'output' is not open" in err


# -- The upload --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_receive_uploaded_with_the_client(daemon: Any, admin_client: Any, mnt: Path) -> None:
    stream = tar_of({"x/y.txt": b"why\n", "z.txt": b"zed\n" * 100_000})
    seen: list[dict[str, Any]] = []
    job_id = await timeout(
        upload(daemon.http_url, "replica.receive", ["tank/new", {"size": len(stream)}],
               [("new.tar", io.BytesIO(stream))], auth=ADMIN, reactor=reactor)
    )
    info = await timeout(admin_client.call_job("core.job_wait", job_id, callback=seen.append))
    assert info["name"] == "tank/new" and info["files"] == 2
    assert files_of(mnt / "tank" / "new") == {"x/y.txt": b"why\n", "z.txt": b"zed\n" * 100_000}
    job = await record(admin_client, job_id)
    assert job["state"] == "SUCCESS" and job["progress"]["percent"] == 100

    # The job fails once it has read the stream: the upload's answer says so
    # (412) if the job ended before it was sent, or waiting for the job does.
    with pytest.raises((ClientCallError, UploadError)) as broken:
        await timeout(
            upload(daemon.http_url, "replica.receive", ["tank/bad"], [io.BytesIO(b"not a tar" * 100)],
                   auth=ADMIN, reactor=reactor, wait=admin_client)
        )
    assert "[EINVAL] Not a replication stream" in str(broken.value)


@pytest_twisted.ensureDeferred
async def test_receive_through_curl_and_midclt(daemon: Any, admin_client: Any, mnt: Path, tmp_path: Path) -> None:
    stream = tmp_path / "in.tar"
    stream.write_bytes(tar_of({"hello.txt": b"hello\n"}))
    out, err, code = await run(
        "curl", "-sSf", "-u", ":".join(ADMIN),
        "-F", 'data={"method": "replica.receive", "params": ["tank/curl"]}', "-F", f"file=@{stream}",
        f"{daemon.http_url}/_upload",
    )
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    out, err, code = await midclt(daemon, "call", "--job", "core.job_wait", str(job_id))
    assert code == 0, err
    assert json.loads(out)["files"] == 1
    assert files_of(mnt / "tank" / "curl") == {"hello.txt": b"hello\n"}


# -- The lock -------------------------------------------------------------------------


class StateLog:
    """
    The (job id, state) changes a client hears of, in order.
    """

    def __init__(self) -> None:
        self.changes: list[tuple[int, str]] = []
        self._waiting: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def event(self, msg: str, collection: str, id: Any, fields: Any) -> None:
        state = (fields or {}).get("state")
        if state and (id, state) not in self.changes:
            self.changes.append((id, state))
        for entry in list(self._waiting):
            if entry[0]():
                self._waiting.remove(entry)
                entry[1].callback(None)

    def reached(self, job_id: int, state: str) -> Deferred[None]:
        predicate = lambda: (job_id, state) in self.changes
        d: Deferred[None] = Deferred()
        if predicate():
            d.callback(None)
        else:
            self._waiting.append((predicate, d))
        return timeout(d)


@pytest_twisted.ensureDeferred
async def test_runs_into_one_dataset_never_overlap(daemon: Any, admin_client: Any, mnt: Path) -> None:
    # Sending tank/dst holds its lock: 2 MiB do not fit the output pipe, so the
    # job blocks until the download is read.
    (mnt / "tank" / "dst").mkdir()
    (mnt / "tank" / "dst" / "big.bin").write_bytes(b"\0" * (2 * 1024 * 1024))
    log = StateLog()
    await admin_client.subscribe("core.get_jobs", log.event)
    send_id, url = await admin_client.call("core.download", "replica.send", ["tank/dst"], "dst.tar")
    await log.reached(send_id, "RUNNING")

    first = await admin_client.call("replica.run", "tank/src", "tank/dst", {"snapshot": "first"})
    second = await admin_client.call("replica.run", "tank/src", "tank/dst", {"snapshot": "second"})
    # A run into another dataset goes ahead meanwhile: the runs above could have too.
    assert (await timeout(admin_client.call_job("replica.run", "tank/src", "tank/other")))["files"] == 3
    assert (await record(admin_client, first))["state"] == "WAITING"
    assert (await record(admin_client, second))["state"] == "WAITING"

    body = io.BytesIO()
    await timeout(download(daemon.http_url, url, body, reactor=reactor))
    assert tar_files(body.getvalue()) == {"big.bin": b"\0" * (2 * 1024 * 1024)}
    await log.reached(second, "SUCCESS")
    order = [change for change in log.changes if change[0] in (send_id, first, second)]
    assert order == [
        (send_id, "WAITING"), (send_id, "RUNNING"), (first, "WAITING"), (second, "WAITING"), (send_id, "SUCCESS"),
        (first, "RUNNING"), (first, "SUCCESS"), (second, "RUNNING"), (second, "SUCCESS"),
    ]  # fmt: skip
    assert files_of(mnt / "tank" / "dst") == SOURCE_FILES
