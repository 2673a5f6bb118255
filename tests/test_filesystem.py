"""
filesystem.*: uploads and downloads through pipes driven in-process, the other
methods over a real WebSocket, and every way out of the roots refused.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import Any, Sequence

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor

from midjobs.client import Client, ClientCallError
from midjobs.config import ConfigError, Settings
from midjobs.daemon import Daemon
from midjobs.errors import CallError
from midjobs.job import Job, JobState
from midjobs.pipe import InputPipes, Pipe, Pipes
from midjobs.plugins import filesystem
from midjobs.plugins.filesystem import TEMP_SUFFIX, upload_name

from conftest import RunningDaemon

SECRET = b"outside the roots\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """
    A directory beside the root, with C{secret.txt} and C{sub/} in it.
    """
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_bytes(SECRET)
    (path / "sub").mkdir()
    return path


@pytest.fixture
def settings(settings: Settings, root: Path, request: pytest.FixtureRequest) -> Settings:
    """
    The roots are C{root}; a test parametrized indirectly on C{settings}
    gives more fields to change.
    """
    return attrs.evolve(settings, filesystem_roots=(str(root),), **getattr(request, "param", {}))


# Driving the pipes.


async def feed(pipe: Pipe, chunks: Sequence[bytes], close: bool = True) -> None:
    """
    Write C{chunks} into C{pipe} as an upload would, then close it.  Stops
    quietly if the job broke the pipe (its outcome is what the tests check).
    """
    for chunk in chunks:
        if pipe.failure is not None:
            return
        try:
            await pipe.write(chunk)
        except Exception:
            assert pipe.failure is not None
            return
    if close:
        pipe.close()


async def drain(pipe: Pipe) -> bytes:
    """
    Read C{pipe} to EOF.
    """
    data = bytearray()
    while chunk := await pipe.read():
        data += chunk
    return bytes(data)


async def put(daemon: RunningDaemon, path: str, chunks: Sequence[bytes], *options: Any) -> Job:
    pipe = daemon.middleware.pipe()
    job = await daemon.middleware.call("filesystem.put", path, *options, pipes=Pipes(inputs=InputPipes(pipe)))
    await feed(pipe, chunks)
    await job.wait()
    return job


async def put_files(daemon: RunningDaemon, directory: str, files: Sequence[tuple[Any, bytes]]) -> Job:
    first = Pipe(reactor, filename=files[0][0])
    inputs = InputPipes(first)
    job = await daemon.middleware.call("filesystem.put_files", directory, pipes=Pipes(inputs=inputs))
    for i, (name, data) in enumerate(files):
        pipe = first if i == 0 else Pipe(reactor, filename=name)
        if i:
            inputs.add(pipe)
        await feed(pipe, [data])
    inputs.finish()
    await job.wait()
    return job


async def get(daemon: RunningDaemon, path: str) -> tuple[Job, bytes]:
    pipe = daemon.middleware.pipe()
    job = await daemon.middleware.call("filesystem.get", path, pipes=Pipes(output=pipe))
    try:
        data = await drain(pipe)
    except Exception:
        data = b""
    await job.wait()
    return job, data


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def transfer_fields(job: Job) -> dict[str, Any]:
    """
    The standard transfer fields of C{job}'s progress, but the rate (its
    value depends on the machine's speed).
    """
    extra = job.progress["extra"]
    return {key: extra[key] for key in ("bytes", "total_bytes", "eta_seconds") if key in extra}


def assert_failed(job: Job, code: int) -> None:
    assert job.state is JobState.FAILED, (job.state, job.error)
    assert job.exc_info is not None and job.exc_info["errno"] == code, job.error


# filesystem.put


@pytest_twisted.ensureDeferred
async def test_put_writes_the_upload(daemon: RunningDaemon, root: Path) -> None:
    chunks = [b"a" * 100_000, b"b" * 300_000, b"c"]
    job = await put(daemon, str(root / "file.bin"), chunks)
    assert job.state is JobState.SUCCESS, job.error
    assert job.result == 400_001
    assert (root / "file.bin").read_bytes() == b"".join(chunks)
    assert stat.S_IMODE((root / "file.bin").stat().st_mode) == 0o644
    # The size of a pipe's input is not known: no total, no time left.
    assert transfer_fields(job) == {"bytes": 400_001}
    assert job.progress["description"] == "400001 bytes written"
    assert job.description == f"Uploading {root / 'file.bin'}"
    assert leftovers(root) == []


@pytest_twisted.ensureDeferred
async def test_put_replaces_a_file_with_the_mode_given(daemon: RunningDaemon, root: Path) -> None:
    (root / "f").write_bytes(b"old content that is longer")
    job = await put(daemon, str(root / "f"), [b"new"], {"mode": 0o600})
    assert job.state is JobState.SUCCESS, job.error
    assert (root / "f").read_bytes() == b"new"
    assert stat.S_IMODE((root / "f").stat().st_mode) == 0o600


@pytest_twisted.ensureDeferred
async def test_put_keeps_the_mode_of_the_file_it_replaces(daemon: RunningDaemon, root: Path) -> None:
    (root / "f").write_bytes(b"old")
    (root / "f").chmod(0o640)
    job = await put(daemon, str(root / "f"), [b"new"])
    assert job.state is JobState.SUCCESS, job.error
    assert stat.S_IMODE((root / "f").stat().st_mode) == 0o640


@pytest_twisted.ensureDeferred
async def test_put_appends(daemon: RunningDaemon, root: Path) -> None:
    (root / "log").write_bytes(b"hello ")
    job = await put(daemon, str(root / "log"), [b"wor", b"ld"], {"append": True})
    assert job.state is JobState.SUCCESS, job.error
    assert job.result == 5
    assert (root / "log").read_bytes() == b"hello world"
    job = await put(daemon, str(root / "new"), [b"first"], {"append": True})
    assert job.state is JobState.SUCCESS, job.error
    assert (root / "new").read_bytes() == b"first"
    assert leftovers(root) == []


@pytest_twisted.ensureDeferred
async def test_put_validates_its_options(daemon: RunningDaemon, root: Path) -> None:
    job = await put(daemon, str(root / "f"), [b"x"], {"append": "yes", "mode": 0o10000, "owner": 0})
    assert job.state is JobState.FAILED
    assert job.exc_info["type"] == "VALIDATION"
    assert {e[0] for e in job.exc_info["extra"]} == {"options.append", "options.mode", "options.owner"}
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1777, 0o6777, 0o1000])
@pytest_twisted.ensureDeferred
async def test_put_refuses_special_mode_bits(daemon: RunningDaemon, root: Path, mode: int) -> None:
    # Finding 5 of issue 11: {"mode": 2541} made a -rwsr-xr-x file.
    job = await put(daemon, str(root / "f"), [b"#!/bin/sh\n"], {"mode": mode})
    assert_failed(job, errno.EINVAL)
    assert job.exc_info["type"] == "VALIDATION"
    assert [e[0] for e in job.exc_info["extra"]] == ["options.mode"]
    assert "0o777" in job.error
    assert list(root.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_put_drops_special_bits_of_the_file_it_replaces(daemon: RunningDaemon, root: Path) -> None:
    (root / "f").write_bytes(b"old")
    (root / "f").chmod(0o4750)
    job = await put(daemon, str(root / "f"), [b"new"])
    assert job.state is JobState.SUCCESS, job.error
    assert stat.S_IMODE((root / "f").stat().st_mode) == 0o750


@pytest_twisted.ensureDeferred
async def test_put_refuses_directories_and_symlinks(daemon: RunningDaemon, root: Path) -> None:
    (root / "dir").mkdir()
    (root / "target").write_bytes(b"target")
    (root / "link").symlink_to(root / "target")
    assert_failed(await put(daemon, str(root / "dir"), [b"x"]), errno.EISDIR)
    assert_failed(await put(daemon, str(root / "dir") + "/", [b"x"]), errno.EINVAL)
    assert_failed(await put(daemon, str(root), [b"x"]), errno.EISDIR)
    # A final symlink is never written through, even one that stays inside.
    assert_failed(await put(daemon, str(root / "link"), [b"x"]), errno.EPERM)
    assert (root / "target").read_bytes() == b"target"
    assert (root / "link").is_symlink()
    assert_failed(await put(daemon, str(root / "missing" / "f"), [b"x"]), errno.ENOENT)
    assert leftovers(root) == []


@pytest.mark.parametrize("append", [False, True])
@pytest_twisted.ensureDeferred
async def test_broken_upload_leaves_the_file_as_it_was(daemon: RunningDaemon, root: Path, append: bool) -> None:
    (root / "f").write_bytes(b"original")
    pipe = daemon.middleware.pipe()
    job = await daemon.middleware.call(
        "filesystem.put", str(root / "f"), {"append": append}, pipes=Pipes(inputs=InputPipes(pipe))
    )
    # Writing more than the pipe holds returns only once the job has taken
    # most of it: the temporary file exists and has data.
    await feed(pipe, [b"x" * 65536] * 16, close=False)
    assert job.state is JobState.RUNNING
    pipe.abort(Exception("client went away"))
    await job.wait()
    assert job.state is JobState.FAILED
    assert "client went away" in job.error
    assert (root / "f").read_bytes() == b"original"
    assert sorted(p.name for p in root.iterdir()) == ["f"]


@pytest_twisted.ensureDeferred
async def test_broken_upload_of_a_new_file_leaves_nothing(daemon: RunningDaemon, root: Path) -> None:
    pipe = daemon.middleware.pipe()
    job = await daemon.middleware.call("filesystem.put", str(root / "new"), pipes=Pipes(inputs=InputPipes(pipe)))
    await feed(pipe, [b"x" * 65536] * 16, close=False)
    pipe.abort(Exception("client went away"))
    await job.wait()
    assert job.state is JobState.FAILED
    assert list(root.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_aborted_upload_leaves_nothing(daemon: RunningDaemon, root: Path, admin_client: Client) -> None:
    pipe = daemon.middleware.pipe()
    job = await daemon.middleware.call("filesystem.put", str(root / "new"), pipes=Pipes(inputs=InputPipes(pipe)))
    await feed(pipe, [b"x" * 65536] * 16, close=False)
    await admin_client.call("core.job_abort", job.id)
    await job.wait()
    assert job.state is JobState.ABORTED
    assert list(root.iterdir()) == []


@pytest.fixture(params=["unnamed", "named"])
def temporary_files(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """
    Both ways of writing an upload: an unnamed C{O_TMPFILE} file, and the
    fallback under a temporary name where that is not supported.
    """
    if request.param == "named":
        monkeypatch.setattr(filesystem, "UNNAMED_FILES", False)
    elif not filesystem.UNNAMED_FILES:
        pytest.skip("O_TMPFILE or /proc/self/fd is not available here")
    return str(request.param)


@pytest_twisted.ensureDeferred
async def test_put_both_ways(temporary_files: str, daemon: RunningDaemon, root: Path) -> None:
    (root / "old").write_bytes(b"old content")
    (root / "old").chmod(0o640)
    for name, options, expected in [
        ("new", {}, b"hello"),
        ("old", {}, b"hello"),
        ("old", {"append": True}, b"hellohello"),
        ("moded", {"mode": 0o600}, b"hello"),
    ]:
        job = await put(daemon, str(root / name), [b"hel", b"lo"], options)
        assert job.state is JobState.SUCCESS, job.error
        assert (root / name).read_bytes() == expected
    assert stat.S_IMODE((root / "old").stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "moded").stat().st_mode) == 0o600
    assert sorted(p.name for p in root.iterdir()) == ["moded", "new", "old"]

    # Mid-upload, only the fallback shows a (temporary) name; a broken upload
    # leaves nothing either way.
    pipe = daemon.middleware.pipe()
    job = await daemon.middleware.call("filesystem.put", str(root / "old"), pipes=Pipes(inputs=InputPipes(pipe)))
    await feed(pipe, [b"x" * 65536] * 16, close=False)
    assert job.state is JobState.RUNNING
    assert len(leftovers(root)) == (1 if temporary_files == "named" else 0)
    pipe.abort(Exception("client went away"))
    await job.wait()
    assert job.state is JobState.FAILED
    assert sorted(p.name for p in root.iterdir()) == ["moded", "new", "old"]
    assert (root / "old").read_bytes() == b"hellohello"


@pytest_twisted.ensureDeferred
async def test_put_of_a_new_file_that_appears_meanwhile(
    temporary_files: str, daemon: RunningDaemon, root: Path
) -> None:
    # A file created under the target's name during the upload is replaced
    # at commit, as a rename would.
    pipe = daemon.middleware.pipe()
    job = await daemon.middleware.call("filesystem.put", str(root / "f"), pipes=Pipes(inputs=InputPipes(pipe)))
    await feed(pipe, [b"x" * 65536] * 16, close=False)
    (root / "f").write_bytes(b"meanwhile")
    await feed(pipe, [b"y"])
    await job.wait()
    assert job.state is JobState.SUCCESS, job.error
    assert (root / "f").read_bytes() == b"x" * 65536 * 16 + b"y"
    assert sorted(p.name for p in root.iterdir()) == ["f"]


# filesystem.put_files


@pytest_twisted.ensureDeferred
async def test_put_files_writes_each_upload(daemon: RunningDaemon, root: Path) -> None:
    (root / "in").mkdir()
    files = [("a.txt", b"first"), ("dir/b.txt", b"second" * 100_000), ("C:\\Users\\me\\c.txt", b"")]
    job = await put_files(daemon, str(root / "in"), files)
    assert job.state is JobState.SUCCESS, job.error
    assert job.result == [str(root / "in" / name) for name in ("a.txt", "b.txt", "c.txt")]
    assert (root / "in" / "a.txt").read_bytes() == b"first"
    assert (root / "in" / "b.txt").read_bytes() == b"second" * 100_000
    assert (root / "in" / "c.txt").read_bytes() == b""
    assert transfer_fields(job) == {"bytes": 600_005}
    assert job.progress["extra"]["files"] == 3
    assert sorted(p.name for p in (root / "in").iterdir()) == ["a.txt", "b.txt", "c.txt"]


@pytest.mark.parametrize("bad", ["..", ".", "", "dir/", "a\0b", None, "a.txt"])
@pytest_twisted.ensureDeferred
async def test_put_files_refuses_a_bad_or_repeated_name(daemon: RunningDaemon, root: Path, bad: Any) -> None:
    files = [("a.txt", b"first"), (bad, b"bad"), ("c.txt", b"third")]
    job = await put_files(daemon, str(root), files)
    assert_failed(job, errno.EINVAL)
    # The file completed before the bad one stays; nothing after it is written.
    assert sorted(p.name for p in root.iterdir()) == ["a.txt"]
    assert (root / "a.txt").read_bytes() == b"first"


@pytest_twisted.ensureDeferred
async def test_put_files_keeps_completed_files_when_a_later_one_breaks(daemon: RunningDaemon, root: Path) -> None:
    first = Pipe(reactor, filename="a.txt")
    inputs = InputPipes(first)
    job = await daemon.middleware.call("filesystem.put_files", str(root), pipes=Pipes(inputs=inputs))
    await feed(first, [b"complete"])
    second = Pipe(reactor, filename="b.txt")
    inputs.add(second)
    await feed(second, [b"y" * 65536] * 16, close=False)
    inputs.fail(Exception("client went away"))
    await job.wait()
    assert job.state is JobState.FAILED
    assert "client went away" in job.error
    assert sorted(p.name for p in root.iterdir()) == ["a.txt"]
    assert (root / "a.txt").read_bytes() == b"complete"


@pytest_twisted.ensureDeferred
async def test_put_files_needs_an_existing_directory(daemon: RunningDaemon, root: Path) -> None:
    assert_failed(await put_files(daemon, str(root / "missing"), [("a", b"x")]), errno.ENOENT)
    (root / "file").write_bytes(b"")
    assert_failed(await put_files(daemon, str(root / "file"), [("a", b"x")]), errno.ENOTDIR)


def test_upload_name() -> None:
    assert upload_name("a/b/c.txt") == "c.txt"
    assert upload_name("C:\\x\\y.bin") == "y.bin"
    assert upload_name(" spaced name ") == " spaced name "
    for bad in (None, "", ".", "..", "x/..", "dir/", "a\0"):
        with pytest.raises(CallError) as e:
            upload_name(bad)
        assert e.value.errno == errno.EINVAL


# filesystem.get


@pytest_twisted.ensureDeferred
async def test_get_streams_a_large_file(daemon: RunningDaemon, root: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)
    (root / "big.bin").write_bytes(data)
    job, received = await get(daemon, str(root / "big.bin"))
    assert job.state is JobState.SUCCESS, job.error
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()
    assert job.result == len(data)
    assert job.progress["percent"] == 100
    assert transfer_fields(job) == {"bytes": len(data), "total_bytes": len(data), "eta_seconds": 0}


@pytest_twisted.ensureDeferred
async def test_get_follows_a_symlink_inside_the_root(daemon: RunningDaemon, root: Path) -> None:
    (root / "target").write_bytes(b"through the link")
    (root / "link").symlink_to("target")
    job, received = await get(daemon, str(root / "link"))
    assert job.state is JobState.SUCCESS, job.error
    assert received == b"through the link"


@pytest_twisted.ensureDeferred
async def test_get_of_an_empty_file(daemon: RunningDaemon, root: Path) -> None:
    (root / "empty").write_bytes(b"")
    job, received = await get(daemon, str(root / "empty"))
    assert job.state is JobState.SUCCESS, job.error
    assert received == b""


@pytest_twisted.ensureDeferred
async def test_get_refuses_missing_files_and_directories(daemon: RunningDaemon, root: Path) -> None:
    (root / "dir").mkdir()
    job, received = await get(daemon, str(root / "missing"))
    assert_failed(job, errno.ENOENT)
    assert received == b""
    assert_failed((await get(daemon, str(root / "dir")))[0], errno.EISDIR)
    assert_failed((await get(daemon, str(root)))[0], errno.EISDIR)
    (root / "self").symlink_to(root)
    assert_failed((await get(daemon, str(root / "self")))[0], errno.EISDIR)


@pytest_twisted.ensureDeferred
async def test_get_refuses_a_hard_link_to_a_file_outside(daemon: RunningDaemon, root: Path, outside: Path) -> None:
    # Issue 11: a hard link inside a root to an outside file was read through.
    os.link(outside / "secret.txt", root / "hard")
    job, received = await get(daemon, str(root / "hard"))
    assert_failed(job, errno.EPERM)
    assert "hard link" in job.error
    assert received == b""
    # Appending would copy the outside file into the root: refused too.
    assert_failed(await put(daemon, str(root / "hard"), [b"more"], {"append": True}), errno.EPERM)
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert (root / "hard").stat().st_nlink == 2
    # Replacing the link is a write to the root only: the outside file stays.
    job = await put(daemon, str(root / "hard"), [b"replaced"])
    assert job.state is JobState.SUCCESS, job.error
    assert (root / "hard").read_bytes() == b"replaced"
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert leftovers(root) == []


@pytest.mark.parametrize("settings", [{"allow_hard_links": True}], indirect=True)
@pytest_twisted.ensureDeferred
async def test_get_serves_hard_links_when_allowed(daemon: RunningDaemon, root: Path, outside: Path) -> None:
    os.link(outside / "secret.txt", root / "hard")
    job, received = await get(daemon, str(root / "hard"))
    assert job.state is JobState.SUCCESS, job.error
    assert received == SECRET
    job = await put(daemon, str(root / "hard"), [b"more"], {"append": True})
    assert job.state is JobState.SUCCESS, job.error
    assert (root / "hard").read_bytes() == SECRET + b"more"


@pytest_twisted.ensureDeferred
async def test_get_fails_when_the_downloader_goes_away(daemon: RunningDaemon, root: Path) -> None:
    (root / "big.bin").write_bytes(b"z" * (4 * 1024 * 1024))
    pipe = daemon.middleware.pipe()
    job = await daemon.middleware.call("filesystem.get", str(root / "big.bin"), pipes=Pipes(output=pipe))
    assert await pipe.read(1000)
    pipe.stopProducing()  # what an HTTP response does when its client disconnects
    await job.wait()
    assert job.state is JobState.FAILED
    assert "went away" in job.error


# filesystem.stat and filesystem.listdir


@pytest_twisted.ensureDeferred
async def test_stat(admin_client: Client, root: Path) -> None:
    (root / "f").write_bytes(b"12345")
    (root / "f").chmod(0o640)
    (root / "d").mkdir()
    (root / "link").symlink_to("f")
    result = await admin_client.call("filesystem.stat", str(root / "f"))
    assert result["type"] == "FILE"
    assert result["size"] == 5
    assert result["mode"] == 0o640
    assert result["uid"] == os.getuid()
    assert result["gid"] == os.getgid()
    assert isinstance(result["mtime"], datetime.datetime)
    assert abs(result["mtime"].timestamp() - (root / "f").stat().st_mtime) < 0.01
    assert result["realpath"] == str(root / "f")
    assert (await admin_client.call("filesystem.stat", str(root / "d")))["type"] == "DIRECTORY"
    link = await admin_client.call("filesystem.stat", str(root / "link"))
    assert link["type"] == "SYMLINK"
    assert link["realpath"] == str(root / "f")
    assert (await admin_client.call("filesystem.stat", str(root)))["type"] == "DIRECTORY"
    assert (await admin_client.call("filesystem.stat", str(root / "d" / "..")))["realpath"] == str(root)
    with pytest.raises(ClientCallError) as e:
        await admin_client.call("filesystem.stat", str(root / "missing"))
    assert e.value.errno == errno.ENOENT


@pytest_twisted.ensureDeferred
async def test_listdir_with_filters_and_options(admin_client: Client, root: Path) -> None:
    (root / "a.txt").write_bytes(b"abc")
    (root / "b.log").write_bytes(b"0123456789")
    (root / "sub").mkdir()
    (root / "link").symlink_to("a.txt")
    entries = await admin_client.call("filesystem.listdir", str(root))
    assert [e["name"] for e in entries] == ["a.txt", "b.log", "link", "sub"]
    assert {e["name"]: e["type"] for e in entries} == {
        "a.txt": "FILE", "b.log": "FILE", "link": "SYMLINK", "sub": "DIRECTORY"
    }
    first = entries[0]
    assert first["path"] == str(root / "a.txt")
    assert first["size"] == 3
    assert isinstance(first["mtime"], datetime.datetime)
    files = await admin_client.call(
        "filesystem.listdir", str(root), [["type", "=", "FILE"]], {"order_by": ["-size"], "select": ["name", "size"]}
    )
    assert files == [{"name": "b.log", "size": 10}, {"name": "a.txt", "size": 3}]
    assert await admin_client.call("filesystem.listdir", str(root), [["name", "^", "b"]], {"count": True}) == 1
    assert await admin_client.call("filesystem.listdir", str(root / "sub")) == []
    with pytest.raises(ClientCallError) as e:
        await admin_client.call("filesystem.listdir", str(root / "a.txt"))
    assert e.value.errno == errno.ENOTDIR
    with pytest.raises(ClientCallError) as e:
        await admin_client.call("filesystem.listdir", str(root), [["name", "~~", "x"]])
    assert e.value.errno == errno.EINVAL


# Paths outside the roots.


def escapes(root: Path, outside: Path) -> dict[str, tuple[str, str]]:
    """
    Each way out of the root: a file path and a directory path that take it.
    """
    (root / "link").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside)
    return {
        "dotdot": (f"{root}/../outside/secret.txt", f"{root}/../outside"),
        "absolute": (str(outside / "secret.txt"), str(outside)),
        "relative": ("outside/secret.txt", "outside"),
        "symlink": (str(root / "link"), str(root / "linkdir")),
        "symlinked parent": (str(root / "linkdir" / "secret.txt"), str(root / "linkdir" / "sub")),
    }


KINDS = ["dotdot", "absolute", "relative", "symlink", "symlinked parent"]


@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_jobs_refuse_paths_outside_the_roots(
    daemon: RunningDaemon, root: Path, outside: Path, kind: str
) -> None:
    file_path, dir_path = escapes(root, outside)[kind]
    assert_failed(await put(daemon, file_path, [b"overwritten"]), errno.EPERM)
    assert_failed(await put(daemon, file_path, [b"appended"], {"append": True}), errno.EPERM)
    assert_failed(await put_files(daemon, dir_path, [("secret.txt", b"overwritten")]), errno.EPERM)
    job, received = await get(daemon, file_path)
    assert_failed(job, errno.EPERM)
    assert received == b""
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt", "sub"]
    assert list((outside / "sub").iterdir()) == []
    assert "outside the filesystem roots" in job.error or "not an absolute path" in job.error


@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_calls_refuse_paths_outside_the_roots(
    admin_client: Client, root: Path, outside: Path, kind: str
) -> None:
    file_path, dir_path = escapes(root, outside)[kind]
    for method, path in [("filesystem.stat", file_path), ("filesystem.listdir", dir_path)]:
        with pytest.raises(ClientCallError) as e:
            await admin_client.call(method, path)
        assert e.value.errno == errno.EPERM, (method, e.value)
        assert "only paths under" in e.value.reason


@pytest_twisted.ensureDeferred
async def test_a_symlink_to_the_parent_of_the_root_is_refused(admin_client: Client, root: Path) -> None:
    (root / "up").symlink_to("..")
    for path in (str(root / "up"), str(root / "up" / "root"), f"{root}/..", "/"):
        with pytest.raises(ClientCallError) as e:
            await admin_client.call("filesystem.listdir", path)
        assert e.value.errno == errno.EPERM, path


# The roots.


def test_roots_setting() -> None:
    settings = Settings(state_dir="/srv/state")
    assert settings.filesystem_root_paths == ("/srv/state/files",)
    settings = settings.updated_from({"filesystem": {"roots": ["/a/", "/b/../c"]}})
    assert settings.filesystem_root_paths == ("/a", "/c")
    for bad in ([], ["relative"], "/a", [1]):
        with pytest.raises(ConfigError):
            Settings().updated_from({"filesystem": {"roots": bad}})


@pytest_twisted.ensureDeferred
async def test_default_root_is_created_private(tmp_path: Path, short_tmp: Path) -> None:
    settings = Settings(
        listen=("tcp:0:interface=127.0.0.1",), state_dir=str(tmp_path / "state"), socket=str(short_tmp / "s.sock")
    )
    service = Daemon(settings, reactor)
    service.startService()
    try:
        await service.ready
        files = tmp_path / "state" / "files"
        assert files.is_dir()
        assert stat.S_IMODE(files.stat().st_mode) == 0o700
        info = await service.middleware.call("filesystem.stat", str(files))
        assert info["type"] == "DIRECTORY"
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_methods_are_listed(admin_client: Client) -> None:
    methods = await admin_client.call("core.get_methods")
    assert methods["filesystem.put"]["uploadable"] is True
    assert methods["filesystem.put_files"]["uploadable"] is True
    assert methods["filesystem.get"]["downloadable"] is True
    assert "atomically" in methods["filesystem.put"]["description"]
    assert [a["name"] for a in methods["filesystem.listdir"]["accepts"]] == ["path", "filters", "options"]
