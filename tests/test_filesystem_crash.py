"""
Uploads cut by a crash: C{twistd -n midjobs} killed with SIGKILL while
C{filesystem.put} writes, then restarted on the same state and roots.

A partial upload must leave nothing in the roots (issue 11, finding 15: the
temporary files were listed by C{filesystem.listdir} and never removed).  An
upload is written to an unnamed C{O_TMPFILE} file that only gets a name at
commit; where that is not supported it has a temporary name, and the daemon
removes such leftovers from the roots when it starts.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol

from midjobs.client import Client, connect
from midjobs.config import Settings
from midjobs.daemon import Daemon
from midjobs.plugins import filesystem
from midjobs.plugins.filesystem import TEMP_SUFFIX

from test_history import LastRecords
from test_twistd import Twistd, twistd
from test_upload import BOUNDARY, RawClient, data_part, request_head

#: A name the fallback gives a temporary file (C{.<name>.<16 hex>.midjobs-tmp}).
LEFTOVER = ".big.bin.0123456789abcdef" + TEMP_SUFFIX


def start(tmp_path: Path, socket: Path, root: Path) -> Twistd:
    config = tmp_path / "midjobs.toml"
    config.write_text(f'[filesystem]\nroots = ["{root}"]\n')
    return twistd(
        "--config", str(config),
        "--state-dir", str(tmp_path / "state"),
        "--listen", "tcp:0:interface=127.0.0.1",
        "--socket", str(socket),
        path=tmp_path,
    )  # fmt: skip


async def local_client(socket: Path) -> Client:
    return await connect(f"ws+unix://{socket}", reactor=reactor, call_timeout=30)


async def listdir(socket: Path, path: Path) -> list[str]:
    client = await local_client(socket)
    try:
        return [entry["name"] for entry in await client.call("filesystem.listdir", str(path))]
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_killed_during_an_upload_leaves_nothing(tmp_path: Path, short_tmp: Path) -> None:
    root, socket = tmp_path / "root", short_tmp / "s.sock"
    (root / "sub").mkdir(parents=True)
    (root / "kept.txt").write_bytes(b"kept")
    process = start(tmp_path, socket, root)
    await process.ready
    client = await local_client(socket)
    told = LastRecords()
    await client.subscribe("core.get_jobs", told)

    # An upload over the UNIX socket (a trusted peer) announces 64 MiB and
    # sends 1 MiB of it, then waits: the job has written part of the file.
    head = b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    first = data_part("filesystem.put", str(root / "big.bin")) + head
    upload = await connectProtocol(UNIXClientEndpoint(reactor, str(socket)), RawClient())
    upload.transport.write(request_head(len(first) + 64 * 1024 * 1024, authorization=None) + first)
    upload.transport.write(b"x" * (1024 * 1024))
    await told.wait_for(
        lambda job: job["method"] == "filesystem.put" and (job["progress"]["extra"] or {}).get("bytes", 0) > 0
    )
    # The file being written has no name yet (it has one in the fallback).
    if filesystem.UNNAMED_FILES:
        assert sorted(p.name for p in root.iterdir()) == ["kept.txt", "sub"]

    process.transport.signalProcess("KILL")
    assert await process.ended == -signal.SIGKILL
    await client.close()
    upload.transport.abortConnection()
    # What the fallback leaves when a daemon dies mid-upload, and files of
    # users that only look like it.
    (root / "sub" / LEFTOVER).write_bytes(b"partial")
    (root / "notes.midjobs-tmp").write_bytes(b"a user's file")
    (root / "sub" / ".x.0123456789abcdeg.midjobs-tmp").write_bytes(b"not hex")

    process = start(tmp_path, socket, root)
    await process.ready
    try:
        assert await listdir(socket, root) == ["kept.txt", "notes.midjobs-tmp", "sub"]
        assert await listdir(socket, root / "sub") == [".x.0123456789abcdeg.midjobs-tmp"]
        assert f"Removed 1 leftover upload files under {root}" in process.output.decode()
    finally:
        process.transport.signalProcess("TERM")
        assert await process.ended == -signal.SIGTERM


@pytest_twisted.ensureDeferred
async def test_sweep_leaves_symlinks_and_what_is_outside(tmp_path: Path, short_tmp: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / LEFTOVER).write_bytes(b"outside the roots")
    (root / "linkdir").symlink_to(outside)
    (root / LEFTOVER).symlink_to(outside / LEFTOVER)
    (root / "dir").mkdir()
    (root / "dir" / LEFTOVER).mkdir()
    settings = Settings(
        listen=("tcp:0:interface=127.0.0.1",),
        state_dir=str(tmp_path / "state"),
        socket=str(short_tmp / "s.sock"),
        filesystem_roots=(str(root),),
    )
    service = Daemon(settings, reactor)
    service.startService()
    try:
        await service.ready
    finally:
        await service.stopService()
    assert (outside / LEFTOVER).read_bytes() == b"outside the roots"
    assert (root / LEFTOVER).is_symlink()
    assert (root / "dir" / LEFTOVER).is_dir()
