"""
Configuration backups: C{config.save} downloaded with treq and wget,
C{config.upload} fed by curl, every kind of bad backup refused without a
trace, and the restore at the next start of C{twistd midjobs}.

The restore functions of L{midjobs.store.restore} are also driven directly,
on state directories left as a crash would leave them.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import re
import signal
import sqlite3
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure

from conftest import ADMIN, RunningDaemon, subprocess_env
from midjobs.client import Client, ClientCallError, connect, download
from midjobs.config import Settings
from midjobs.daemon import Daemon
from midjobs.job import JobState
from midjobs.store.backup import CONFIG_NAME, DATABASE_NAME, MEMBER_LIMITS
from midjobs.store.restore import BACKUP_SUFFIX, PENDING_DIR, RESTORED_CONFIG_NAME, apply_pending_restore, scratch_directory
from test_history import LastRecords
from test_twistd import Twistd, twistd

CONFIG = b'# the daemon\'s configuration\n[jobs]\nkeep_finished = 500\n'
MIDCLT = str(Path(sys.executable).parent / "midclt")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "midjobs.toml"
    path.write_bytes(CONFIG)
    return path


@pytest.fixture
def settings(settings: Settings, config_file: Path) -> Settings:
    return attrs.evolve(settings, config_file=str(config_file) if config_file else None)


# Helpers.


def timeout(d: Deferred[Any], seconds: float = 60) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


async def save(daemon: RunningDaemon, client: Client) -> tuple[int, bytes]:
    """
    Download C{config.save} with treq: its job id and the tar.
    """
    job_id, path = await client.call("core.download", "config.save", [], "backup.tar")
    out = io.BytesIO()
    await timeout(download(daemon.http_url, path, out, reactor=reactor))
    return job_id, out.getvalue()


async def curl_upload(daemon: RunningDaemon, path: Path) -> tuple[int, dict[str, Any]]:
    """
    Upload C{path} to C{config.upload} with curl, as the documentation does:
    the HTTP status and the JSON body.
    """
    out, err, code = await timeout(
        getProcessOutputAndValue(
            "curl",
            [
                "-sS", "-w", "\n%{http_code}", "-u", ":".join(ADMIN),
                "-F", 'data={"method": "config.upload", "params": []}',
                "-F", f"file=@{path}",
                f"{daemon.http_url}/_upload",
            ],
            env=os.environ,
        )
    )  # fmt: skip
    assert code == 0, err.decode()
    body, _, status = out.decode().rpartition("\n")
    return int(status), json.loads(body)


async def upload(daemon: RunningDaemon, content: bytes, tmp_path: Path) -> Any:
    """
    Upload C{content} with curl; the ended job.

    The daemon answers 200 with the job's id once the job has the whole
    upload, or 412 with the job's error if the job failed before that.
    """
    path = tmp_path / "upload.tar"
    path.write_bytes(content)
    status, body = await curl_upload(daemon, path)
    if status == 200:
        job = daemon.middleware.jobs.get(body["job_id"])
    else:
        assert status == 412, body
        match = re.match(r"Job (\d+) \(config\.upload\) failed while uploading: ", body["error"])
        assert match, body
        job = daemon.middleware.jobs.get(int(match.group(1)))
        assert body["error"].endswith(job.error), body
    await timeout(job.wait())
    return job


def members(content: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def tar_of(*entries: tuple[str, bytes] | tarfile.TarInfo, format: int = tarfile.USTAR_FORMAT) -> bytes:
    """
    A tar of C{(name, content)} regular files and bare headers.
    """
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def users_in(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [name for (name,) in db.execute("SELECT username FROM users ORDER BY username")]


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def files_under(directory: Path) -> dict[str, str]:
    """
    Every file under C{directory}, with the SHA-256 of its content.
    """
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def leftovers(state_dir: Path) -> list[str]:
    return [p.name for p in state_dir.iterdir() if p.name.startswith(".backup-")]


def database_of(content: bytes, directory: Path) -> Path:
    path = directory / "extracted.db"
    path.write_bytes(members(content)[DATABASE_NAME])
    return path


# config.save


@pytest_twisted.ensureDeferred
async def test_save_streams_the_database_and_the_config_file(
    daemon: RunningDaemon, admin_client: Client, tmp_path: Path
) -> None:
    # The database is written to all the while: the copy is still one consistent snapshot.
    busy = [admin_client.call("core.job_test") for _ in range(10)]
    busy += [admin_client.call("user.create", {"username": f"u{i}", "password": "pw-pw-pw"}) for i in range(3)]
    job_id, content = await save(daemon, admin_client)
    await DeferredList(busy, fireOnOneErrback=True, consumeErrors=True)

    with tarfile.open(fileobj=io.BytesIO(content), mode="r:") as tar:
        infos = tar.getmembers()
    assert [m.name for m in infos] == [CONFIG_NAME, DATABASE_NAME]
    assert all(m.isreg() and m.mode == 0o600 for m in infos)
    assert len(content) % tarfile.RECORDSIZE == 0
    assert members(content)[CONFIG_NAME] == CONFIG
    db = database_of(content, tmp_path)
    assert integrity(db) == "ok"
    assert ADMIN[0] in users_in(db)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert {"users", "jobs", "schema_version"} <= {
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    job = daemon.middleware.jobs.get(job_id)
    await job.wait()
    assert job.state is JobState.SUCCESS, job.error
    assert job.progress["description"] == "Configuration backup sent"
    assert leftovers(daemon.state_dir) == []


@pytest.mark.parametrize("config_file", [None])
@pytest_twisted.ensureDeferred
async def test_save_without_a_config_file(daemon: RunningDaemon, admin_client: Client) -> None:
    _, content = await save(daemon, admin_client)
    assert list(members(content)) == [DATABASE_NAME]


@pytest_twisted.ensureDeferred
async def test_save_with_midclt_and_wget(daemon: RunningDaemon, admin_client: Client, tmp_path: Path) -> None:
    """
    C{midclt call core.download config.save '[]' backup.tar}, then wget, as the documentation does.
    """
    out, err, code = await timeout(
        getProcessOutputAndValue(
            MIDCLT,
            ["-u", daemon.unix_url, "call", "core.download", "config.save", "[]", "backup.tar"],
            env=subprocess_env(),
        )
    )
    assert code == 0, err.decode()
    path = out.decode().split('"')[1]
    out, err, code = await timeout(
        getProcessOutputAndValue(
            "wget",
            ["--tries=1", "-q", "--content-disposition", "-P", str(tmp_path / "got"), daemon.http_url + path],
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
    )
    assert code == 0, err.decode()
    content = (tmp_path / "got" / "backup.tar").read_bytes()
    assert list(members(content)) == [CONFIG_NAME, DATABASE_NAME]
    assert integrity(database_of(content, tmp_path)) == "ok"


@pytest_twisted.ensureDeferred
async def test_config_file_that_cannot_be_read_fails_the_save(
    daemon: RunningDaemon, admin_client: Client, config_file: Path
) -> None:
    config_file.unlink()
    job_id, path = await admin_client.call("core.download", "config.save", [], "backup.tar")
    job = daemon.middleware.jobs.get(job_id)
    await timeout(job.wait())
    assert job.state is JobState.FAILED
    assert job.exc_info["errno"] == errno.ENOENT
    assert f"Cannot read the configuration file {config_file}" in job.error
    assert leftovers(daemon.state_dir) == []


# config.upload


@pytest_twisted.ensureDeferred
async def test_upload_stages_the_backup_and_changes_nothing_else(
    daemon: RunningDaemon, admin_client: Client, tmp_path: Path
) -> None:
    _, content = await save(daemon, admin_client)
    await admin_client.call("user.create", {"username": "later", "password": "pw-pw-pw"})

    job = await upload(daemon, content, tmp_path)
    assert job.state is JobState.SUCCESS, job.error
    assert job.description == "Uploading a configuration backup"
    assert job.progress["description"] == "Configuration backup staged: restart the daemon to restore it"
    pending = daemon.state_dir / PENDING_DIR
    assert sorted(p.name for p in pending.iterdir()) == [DATABASE_NAME, CONFIG_NAME]
    assert (pending / CONFIG_NAME).read_bytes() == CONFIG
    assert users_in(pending / DATABASE_NAME) == [ADMIN[0]]
    assert integrity(pending / DATABASE_NAME) == "ok"
    assert oct((pending / DATABASE_NAME).stat().st_mode & 0o777) == "0o600"
    # The daemon goes on with its own database until it restarts.
    assert "later" in [u["username"] for u in await admin_client.call("user.query")]
    assert not (daemon.state_dir / (DATABASE_NAME + BACKUP_SUFFIX)).exists()
    assert leftovers(daemon.state_dir) == []

    # A second upload replaces the first.
    await admin_client.call("user.create", {"username": "second", "password": "pw-pw-pw"})
    _, newer = await save(daemon, admin_client)
    job = await upload(daemon, newer, tmp_path)
    assert job.state is JobState.SUCCESS, job.error
    assert users_in(pending / DATABASE_NAME) == [ADMIN[0], "later", "second"]
    assert leftovers(daemon.state_dir) == []


@pytest.mark.parametrize("format", ["gnu", "ustar"])
@pytest_twisted.ensureDeferred
async def test_a_backup_unpacked_and_packed_again_with_tar_is_accepted(
    daemon: RunningDaemon, admin_client: Client, tmp_path: Path, format: str
) -> None:
    _, content = await save(daemon, admin_client)
    (tmp_path / "saved.tar").write_bytes(content)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    for argv in (
        ["-xf", str(tmp_path / "saved.tar"), "-C", str(unpacked)],
        [f"--format={format}", "-cf", str(tmp_path / "again.tar"), "-C", str(unpacked), DATABASE_NAME, CONFIG_NAME],
    ):
        out, err, code = await timeout(getProcessOutputAndValue("tar", argv, env=os.environ))
        assert code == 0, err.decode()
    job = await upload(daemon, (tmp_path / "again.tar").read_bytes(), tmp_path)
    assert job.state is JobState.SUCCESS, job.error
    assert files_under(daemon.state_dir / PENDING_DIR) == files_under(unpacked)


def _with_db(db: bytes) -> bytes:
    return tar_of((CONFIG_NAME, CONFIG), (DATABASE_NAME, db))


def _sqlite(tmp: Path, *statements: str) -> bytes:
    path = tmp / f"made-{len(list(tmp.iterdir()))}.db"
    with sqlite3.connect(path) as db:
        for statement in statements:
            db.execute(statement)
    db.close()
    return path.read_bytes()


def _corrupt(db: bytes) -> bytes:
    # Page 1 (the schema) intact, the b-tree pages after it garbage.
    page = int.from_bytes(db[16:18], "big")
    return db[:page] + b"\xa5" * (len(db) - page)


def _directory() -> tarfile.TarInfo:
    info = tarfile.TarInfo(DATABASE_NAME)
    info.type = tarfile.DIRTYPE
    return info


def _without_end(content: bytes) -> bytes:
    # The members, whole, but not the two zero blocks that end a tar.
    out = b""
    for name, data in members(content).items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out += info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") + data + bytes(-len(data) % 512)
    return out


def _symlink() -> tarfile.TarInfo:
    info = tarfile.TarInfo(DATABASE_NAME)
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    return info


def _huge(name: str) -> bytes:
    # Only the header, which claims more than the limit: nothing after it is read.
    info = tarfile.TarInfo(name)
    info.size = MEMBER_LIMITS[name] + 1
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") + bytes(8192)


def _pax(content: bytes) -> bytes:
    info = tarfile.TarInfo(DATABASE_NAME)
    db = members(content)[DATABASE_NAME]
    info.size = len(db)
    info.pax_headers = {"comment": "hello"}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(db))
    return out.getvalue()


#: Each bad backup: a name, how to make it from a good backup and a scratch
#: directory, and what the error says.
BAD: list[tuple[str, Callable[[bytes, Path], bytes], str]] = [
    ("empty", lambda good, tmp: b"", "The upload is empty"),
    ("tiny", lambda good, tmp: b"hello", "The upload is not a tar archive: it is only 5 bytes"),
    ("not a tar", lambda good, tmp: os.urandom(20_000), "The upload is not a tar archive ("),
    ("gzipped", lambda good, tmp: gzip.compress(good), "The upload is not a tar archive ("),
    ("dot-dot name", lambda good, tmp: tar_of(("../midjobs.db", members(good)[DATABASE_NAME])), "unsafe name: '../midjobs.db'"),
    ("absolute name", lambda good, tmp: tar_of(("/tmp/midjobs.db", b"x")), "unsafe name: '/tmp/midjobs.db'"),
    ("deep dot-dot", lambda good, tmp: tar_of(("a/../../midjobs.db", b"x")), "unsafe name"),
    ("extra member", lambda good, tmp: tar_of(*members(good).items(), ("notes.txt", b"hi")),
     "The tar archive holds 'notes.txt': a backup holds only midjobs.db, midjobs.toml"),
    ("directory", lambda good, tmp: tar_of(_directory()), "'midjobs.db' in the tar archive is not a regular file"),
    ("twice", lambda good, tmp: tar_of(*members(good).items(), (DATABASE_NAME, b"again")), "holds 'midjobs.db' twice"),
    ("symlink", lambda good, tmp: tar_of(_symlink()), "'midjobs.db' in the tar archive is not a regular file"),
    ("no database", lambda good, tmp: tar_of((CONFIG_NAME, CONFIG)), "does not hold midjobs.db: it is not a midjobs backup"),
    ("only the end marker", lambda good, tmp: bytes(10240), "does not hold midjobs.db"),
    ("huge database", lambda good, tmp: _huge(DATABASE_NAME), f"'midjobs.db' in the tar archive is too large: {MEMBER_LIMITS[DATABASE_NAME] + 1} bytes"),
    ("huge config", lambda good, tmp: _huge(CONFIG_NAME), "'midjobs.toml' in the tar archive is too large"),
    ("pax headers", lambda good, tmp: _pax(good), "pax or GNU extended headers"),
    ("cut in half", lambda good, tmp: good[: len(good) // 2], "The tar archive is truncated: 'midjobs.db' should hold"),
    ("no end marker", lambda good, tmp: _without_end(good), "The tar archive is truncated: it ends without its end marker"),
    ("junk after the end", lambda good, tmp: good + b"junk", "more data after the end of the tar archive"),
    ("corrupt database", lambda good, tmp: _with_db(_corrupt(members(good)[DATABASE_NAME])), "midjobs.db "),
    ("not a database", lambda good, tmp: _with_db(b"SQLite format 3\0" + os.urandom(5000)), "midjobs.db "),
    ("text as database", lambda good, tmp: _with_db(b"hello world\n" * 100), "midjobs.db is not a usable SQLite database: file is not a database"),
    ("empty database", lambda good, tmp: _with_db(b""), "midjobs.db is an SQLite database, but not one of midjobs: it has no schema_version table"),
    ("foreign database", lambda good, tmp: _with_db(_sqlite(tmp, "CREATE TABLE t (x)")), "it has no schema_version table"),
    ("newer schema", lambda good, tmp: _with_db(_sqlite(
        tmp,
        "CREATE TABLE schema_version (name TEXT PRIMARY KEY, version INTEGER NOT NULL, applied REAL NOT NULL)",
        "CREATE TABLE users (id INTEGER PRIMARY KEY)",
        "INSERT INTO schema_version VALUES ('users', 99, 0)",
    )), "midjobs.db comes from a newer midjobs: its 'users' schema is at version 99, this daemon knows 1"),
    ("no users", lambda good, tmp: _with_db(_sqlite(
        tmp,
        "CREATE TABLE schema_version (name TEXT PRIMARY KEY, version INTEGER NOT NULL, applied REAL NOT NULL)",
    )), "midjobs.db has no 'users' schema"),
    ("bad config", lambda good, tmp: tar_of((CONFIG_NAME, b"[jobs]\nkeep_finished = -3\n"), (DATABASE_NAME, members(good)[DATABASE_NAME])),
     "midjobs.toml: jobs.keep_finished must be a positive integer"),
    ("config not toml", lambda good, tmp: tar_of((CONFIG_NAME, b"[jobs\n"), (DATABASE_NAME, members(good)[DATABASE_NAME])),
     "midjobs.toml is not valid TOML"),
]  # fmt: skip


@pytest.mark.parametrize("make, message", [(make, message) for _, make, message in BAD], ids=[name for name, _, _ in BAD])
@pytest_twisted.ensureDeferred
async def test_bad_backup_is_refused_and_changes_nothing(
    daemon: RunningDaemon, admin_client: Client, tmp_path: Path, make: Any, message: str
) -> None:
    _, good = await save(daemon, admin_client)
    await admin_client.call("user.create", {"username": "later", "password": "pw-pw-pw"})
    assert (await upload(daemon, good, tmp_path)).state is JobState.SUCCESS
    staged = files_under(daemon.state_dir / PENDING_DIR)
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    job = await upload(daemon, make(good, scratch), tmp_path)
    assert job.state is JobState.FAILED
    assert job.exc_info["errno"] == errno.EINVAL, job.error
    assert message in job.error, job.error
    # The backup staged before is still the one that will be restored, and nothing else is left.
    assert files_under(daemon.state_dir / PENDING_DIR) == staged
    assert leftovers(daemon.state_dir) == []
    assert "later" in [u["username"] for u in await admin_client.call("user.query")]


# Broken uploads.


class RawUpload(Protocol):
    """
    An HTTP client that sends what the test gives it, then hangs up.
    """

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure) -> None:
        self.closed.callback(None)


def multipart(content: bytes) -> tuple[bytes, bytes]:
    """
    The head and body of a C{config.upload} request for C{content}.
    """
    boundary = b"b0undary"
    data = json.dumps({"method": "config.upload", "params": []}).encode()
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="data"\r\n\r\n' + data + b"\r\n"
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="backup.tar"\r\n\r\n'
        + content + b"\r\n--" + boundary + b"--\r\n"
    )
    auth = b"Basic " + base64.b64encode(":".join(ADMIN).encode())
    head = (
        b"POST /_upload HTTP/1.1\r\nHost: localhost\r\nAuthorization: " + auth + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    return head, body


@pytest.mark.parametrize("how", ["disconnect", "abort"])
@pytest_twisted.ensureDeferred
async def test_upload_cut_short_changes_nothing(
    daemon: RunningDaemon, admin_client: Client, tmp_path: Path, how: str
) -> None:
    await admin_client.call("user.create", {"username": "later", "password": "pw-pw-pw"})
    _, good = await save(daemon, admin_client)
    # A big backup: its first half is well under way when the upload stops.
    big = tar_of((DATABASE_NAME, members(good)[DATABASE_NAME] + bytes(8 << 20)))
    told = LastRecords()
    await admin_client.subscribe("core.get_jobs", told)

    head, body = multipart(big)
    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port), RawUpload())
    client.transport.write(head + body[: len(body) // 2])
    await told.wait_for(
        lambda f: f["method"] == "config.upload" and (f["progress"]["extra"] or {}).get("bytes", 0) > 0
    )
    (job,) = [j for j in daemon.middleware.jobs if j.method == "config.upload"]
    if how == "disconnect":
        client.transport.abortConnection()
        await client.closed
        await timeout(job.wait())
        assert job.state is JobState.FAILED
        assert job.exc_info["errno"] == errno.ECONNABORTED, job.error
        assert "The client disconnected before the upload ended" in job.error
    else:
        await admin_client.call("core.job_abort", job.id)
        await timeout(job.wait())
        assert job.state is JobState.ABORTED
        client.transport.abortConnection()
        await client.closed
    assert not (daemon.state_dir / PENDING_DIR).exists()
    assert leftovers(daemon.state_dir) == []


@pytest_twisted.ensureDeferred
async def test_only_administrators_back_up_and_restore(
    daemon: RunningDaemon, admin_client: Client, tmp_path: Path
) -> None:
    _, good = await save(daemon, admin_client)
    await admin_client.call("user.create", {"username": "alice", "password": "alice-pass", "roles": ["READONLY_ADMIN"]})
    alice = await connect(daemon.ws_url, reactor=reactor)
    try:
        assert await alice.login("alice", "alice-pass")
        with pytest.raises(ClientCallError) as caught:
            await alice.call("core.download", "config.save", [], "backup.tar")
        assert caught.value.errno == errno.EACCES
    finally:
        await alice.close()
    path = tmp_path / "backup.tar"
    path.write_bytes(good)
    out, err, code = await timeout(
        getProcessOutputAndValue(
            "curl",
            [
                "-sS", "-w", "\n%{http_code}", "-u", "alice:alice-pass",
                "-F", 'data={"method": "config.upload", "params": []}', "-F", f"file=@{path}",
                f"{daemon.http_url}/_upload",
            ],
            env=os.environ,
        )
    )  # fmt: skip
    assert out.decode().endswith("\n403"), out
    assert not (daemon.state_dir / PENDING_DIR).exists()


# The restore at the next start.


def start(state: Path, socket: Path, cwd: Path) -> Twistd:
    return twistd(
        "--state-dir", str(state), "--listen", "tcp:0:interface=127.0.0.1", "--socket", str(socket), path=cwd
    )


async def local_client(socket: Path) -> Client:
    return await connect(f"ws+unix://{socket}", reactor=reactor, call_timeout=30)


async def usernames(client: Client) -> list[str]:
    return sorted(u["username"] for u in await client.call("user.query"))


@pytest_twisted.ensureDeferred
async def test_restore_happens_at_the_next_start(tmp_path: Path, short_tmp: Path) -> None:
    state, socket = tmp_path / "state", short_tmp / "s.sock"
    process = start(state, socket, tmp_path)
    port = await process.ready
    http = f"http://127.0.0.1:{port}"
    client = await local_client(socket)
    await client.call("user.create", {"username": "admin", "password": "s3cret-pass", "roles": ["FULL_ADMIN"]})
    await client.call_job("core.job_test", {"description": "before the backup"})
    job_id, path = await client.call("core.download", "config.save", [], "backup.tar")
    out, err, code = await timeout(
        getProcessOutputAndValue(
            "wget", ["--tries=1", "-q", "--content-disposition", "-P", str(tmp_path), http + path], env=os.environ
        )
    )
    assert code == 0, err.decode()
    backup = tmp_path / "backup.tar"
    assert list(members(backup.read_bytes())) == [DATABASE_NAME]

    await client.call("user.create", {"username": "later", "password": "pw-pw-pw"})
    out, err, code = await timeout(
        getProcessOutputAndValue(
            "curl",
            [
                "-sS", "-f", "-u", "admin:s3cret-pass",
                "-F", 'data={"method": "config.upload", "params": []}', "-F", f"file=@{backup}",
                f"{http}/_upload",
            ],
            env=os.environ,
        )
    )  # fmt: skip
    assert code == 0, err.decode()
    upload_id = json.loads(out)["job_id"]
    assert await client.call_job("core.job_wait", upload_id) is None
    assert await usernames(client) == ["admin", "later"]
    await client.close()

    process.transport.signalProcess(signal.SIGTERM)
    assert await process.ended == -signal.SIGTERM
    process = start(state, socket, tmp_path)
    await process.ready
    log = process.output.decode()
    assert f"Restored the database {state / DATABASE_NAME} from a configuration backup; " in log
    assert f"the previous one is {state / (DATABASE_NAME + BACKUP_SUFFIX)}" in log

    client = await local_client(socket)
    assert await usernames(client) == ["admin"]
    # The job history is the backup's: the job that ended before it, not the upload.
    jobs = {j["id"]: j for j in await client.call("core.get_jobs")}
    assert [(j["method"], j["state"]) for j in jobs.values() if j["id"] < job_id] == [("core.job_test", "SUCCESS")]
    assert upload_id not in jobs
    await client.close()
    assert users_in(state / (DATABASE_NAME + BACKUP_SUFFIX)) == ["admin", "later"]
    assert integrity(state / (DATABASE_NAME + BACKUP_SUFFIX)) == "ok"
    assert not (state / PENDING_DIR).exists()
    assert not (state / RESTORED_CONFIG_NAME).exists()

    # Restored once: the next start leaves the database alone.
    process.transport.signalProcess(signal.SIGTERM)
    assert await process.ended == -signal.SIGTERM
    process = start(state, socket, tmp_path)
    await process.ready
    assert "Restored the database" not in process.output.decode()
    process.transport.signalProcess(signal.SIGTERM)
    assert await process.ended == -signal.SIGTERM


@pytest_twisted.ensureDeferred
async def test_restore_puts_the_config_file_of_the_backup_beside_the_database(
    settings: Settings, config_file: Path, tmp_path: Path
) -> None:
    first = Daemon(settings, reactor)
    first.startService()
    await first.ready
    running = RunningDaemon(first, Path(settings.state_dir), settings.socket_path, first.listeners[0].port.getHost().port)
    await first.middleware.users.create({"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
    client = await connect(running.ws_url, reactor=reactor)
    try:
        assert await client.login(*ADMIN)
        _, content = await save(running, client)
    finally:
        await client.close()
    config_file.write_bytes(CONFIG + b"[daemon]\nlog_level = 'debug'\n")
    assert (await upload(running, content, tmp_path)).state is JobState.SUCCESS
    await first.stopService()

    second = Daemon(settings, reactor)
    second.startService()
    await second.ready
    try:
        state = Path(settings.state_dir)
        assert (state / RESTORED_CONFIG_NAME).read_bytes() == CONFIG
        assert not (state / PENDING_DIR).exists()
        assert [u["username"] for u in await second.middleware.users.query()] == [ADMIN[0]]
    finally:
        await second.stopService()
    # The configuration file in force is left as it is.
    assert config_file.read_bytes() != CONFIG


# apply_pending_restore on its own, on state directories a crash left behind.


def make_database(path: Path, *users: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE IF NOT EXISTS users (username TEXT)")
        db.executemany("INSERT INTO users VALUES (?)", [(u,) for u in users])
    db.close()


def crashed_copy(source: Path, target: Path) -> None:
    """
    Copy C{source} and its C{-wal} while a connection holds them open, as a
    daemon killed with SIGKILL leaves them: the last commits only in the WAL.
    """
    holder = sqlite3.connect(source)
    holder.execute("PRAGMA wal_autocheckpoint = 0")
    holder.execute("INSERT INTO users VALUES ('in-the-wal')")
    holder.commit()
    target.write_bytes(source.read_bytes())
    Path(f"{target}-wal").write_bytes(Path(f"{source}-wal").read_bytes())
    holder.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


def stage(state: Path, *users: str, config: bytes | None = None) -> None:
    (state / PENDING_DIR).mkdir()
    staged = state / PENDING_DIR / DATABASE_NAME
    make_database(staged, *users)
    with sqlite3.connect(staged) as db:
        db.execute("PRAGMA journal_mode = DELETE")
    db.close()
    if config is not None:
        (state / PENDING_DIR / CONFIG_NAME).write_bytes(config)


def test_nothing_pending(state: Path) -> None:
    make_database(state / DATABASE_NAME, "a")
    before = files_under(state)
    assert apply_pending_restore(state) is False
    assert files_under(state) == before


def test_restore_folds_the_wal_of_the_replaced_database(state: Path, tmp_path: Path) -> None:
    make_database(tmp_path / "live.db", "a")
    crashed_copy(tmp_path / "live.db", state / DATABASE_NAME)
    stage(state, "restored", config=CONFIG)
    (state / ".backup-1234.tmp").mkdir()
    (state / ".backup-1234.tmp" / "junk").write_bytes(b"x")

    assert apply_pending_restore(state) is True
    assert users_in(state / DATABASE_NAME) == ["restored"]
    bak = state / (DATABASE_NAME + BACKUP_SUFFIX)
    assert sorted(p.name for p in state.iterdir()) == [DATABASE_NAME, bak.name, RESTORED_CONFIG_NAME]
    assert users_in(bak) == ["a", "in-the-wal"]
    assert (state / RESTORED_CONFIG_NAME).read_bytes() == CONFIG


def test_restore_finishes_what_a_crash_interrupted(state: Path, tmp_path: Path) -> None:
    # The crash came after the database became the .bak, before its WAL followed it.
    make_database(tmp_path / "live.db", "a")
    crashed_copy(tmp_path / "live.db", state / DATABASE_NAME)
    os.rename(state / DATABASE_NAME, state / (DATABASE_NAME + BACKUP_SUFFIX))
    stage(state, "restored")

    assert apply_pending_restore(state) is True
    assert not Path(f"{state / DATABASE_NAME}-wal").exists()
    assert Path(f"{state / DATABASE_NAME}{BACKUP_SUFFIX}-wal").exists()
    assert users_in(state / DATABASE_NAME) == ["restored"]
    assert users_in(state / (DATABASE_NAME + BACKUP_SUFFIX)) == ["a", "in-the-wal"]
    assert not (state / PENDING_DIR).exists()


def test_restore_refuses_a_database_in_use(state: Path) -> None:
    make_database(state / DATABASE_NAME, "a")
    stage(state, "restored")
    in_use = sqlite3.connect(state / DATABASE_NAME)
    in_use.execute("SELECT * FROM users").fetchall()
    try:
        before = files_under(state)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            apply_pending_restore(state)
        assert files_under(state) == before
    finally:
        in_use.close()
    assert apply_pending_restore(state) is True
    assert users_in(state / DATABASE_NAME) == ["restored"]


def test_leftovers_of_a_crash_go_but_directories_in_use_stay(state: Path) -> None:
    (state / ".backup-crashed.tmp").mkdir()
    (state / ".backup-crashed.tmp" / DATABASE_NAME).write_bytes(b"half a copy")
    with scratch_directory(state) as in_use:
        (in_use / DATABASE_NAME).write_bytes(b"being written")
        assert apply_pending_restore(state) is False
        assert [p.name for p in state.iterdir()] == [in_use.name]
        assert (in_use / DATABASE_NAME).read_bytes() == b"being written"
    assert list(state.iterdir()) == []
