"""
Configuration backups: the daemon's database and configuration file in one
tar, checked on the way back in, and restored at the next start.

A backup is an uncompressed tar (ustar) that holds C{midjobs.db}, a copy of
the database made with SQLite's online backup API (consistent however busy
the daemon is), and C{midjobs.toml}, the configuration file the daemon was
started with, if it had one.  L{write_backup} makes it.

Restoring takes two steps.  L{stage_restore} reads an uploaded backup into a
private temporary directory of the state directory and checks all of it
(L{read_backup}, L{check_database}); only if all is well does it rename that
directory to C{<state_dir>/restore}.  The running daemon goes on with the
database it has.  At the next start, before the database is opened,
L{apply_pending_restore} keeps the current database as C{midjobs.db.bak}
and moves the staged one in.

Every function here blocks: call them from a thread job, or at start before
the reactor serves anyone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import sqlite3
import tarfile
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping, Sequence

import attrs

from ..logs import logger
from .database import DEFAULT_BUSY_TIMEOUT_MS

__all__ = [
    "BACKUP_SUFFIX",
    "CONFIG_NAME",
    "DATABASE_NAME",
    "MEMBER_LIMITS",
    "PENDING_DIR",
    "RESTORED_CONFIG_NAME",
    "BackupError",
    "SchemaPart",
    "apply_pending_restore",
    "backup_database",
    "check_database",
    "read_backup",
    "scratch_directory",
    "stage_restore",
    "write_backup",
]

log = logger(__name__)

#: The database's file name, in the state directory and in a backup.
DATABASE_NAME = "midjobs.db"
#: The configuration file's name in a backup.
CONFIG_NAME = "midjobs.toml"
#: The directory of the state directory where a checked backup waits for the next start.
PENDING_DIR = "restore"
#: Added to the database's name for the one a restore replaced.
BACKUP_SUFFIX = ".bak"
#: Where a restore puts the configuration file of the backup, in the state directory.
RESTORED_CONFIG_NAME = "midjobs.restored.toml"
#: The most bytes each member of a backup may hold.
MEMBER_LIMITS: Mapping[str, int] = {DATABASE_NAME: 4 << 30, CONFIG_NAME: 1 << 20}
#: The members a backup must hold.
REQUIRED_MEMBERS = frozenset({DATABASE_NAME})

#: The prefix of the temporary directories of the state directory this module makes.
_TEMP_PREFIX = ".backup-"
#: The most zero bytes accepted after the end of a tar (its last record's padding).
_MAX_PADDING = 1 << 20
_BLOCK = tarfile.BLOCKSIZE
_ZERO_BLOCK = bytes(_BLOCK)
_CHUNK = 1 << 20
#: The files SQLite keeps beside a database that belong to it; the C{-shm} is rebuilt.
_JOURNALS = ("-wal", "-journal")
_EXTENSION_TYPES = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)

#: Called with the bytes moved so far; it may raise to stop (an abort).
Progress = Callable[[int], None]


class BackupError(ValueError):
    """
    An uploaded backup cannot be restored: what is wrong with it, in words
    for the person who uploaded it.
    """


@attrs.frozen
class SchemaPart:
    """
    A part of the daemon's schema (as L{ensure_schema} applies it) that a
    backup's database is checked against.

    @ivar name: the part's name in the C{schema_version} table.
    @ivar version: how many statements this code has for it: a database
        that has seen more comes from a newer midjobs and is refused.
    @ivar tables: the tables the part makes, which must exist if the part
        is recorded.
    @ivar required: whether every database of the daemon has this part.
    """

    name: str
    version: int
    tables: tuple[str, ...]
    required: bool = True


# Making a backup.


def _read_only_uri(path: Path) -> str:
    return f"file:{urllib.parse.quote(str(path))}?mode=ro"


def backup_database(source: Path, target: Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
    """
    Copy the SQLite database C{source} to the new file C{target} with
    SQLite's online backup API, in one step: the copy is the database as one
    read transaction saw it, while the daemon goes on writing.  The copy
    uses a rollback journal, so it is whole without a C{-wal} file beside
    it, and it is fsynced.
    """
    with contextlib.closing(sqlite3.connect(_read_only_uri(source), uri=True)) as reader:
        reader.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        with contextlib.closing(sqlite3.connect(target, isolation_level=None)) as copy:
            reader.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
    os.chmod(target, 0o600)
    _fsync_file(target)


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o600
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def write_backup(
    out: BinaryIO, database: Path, config: bytes | None, *, progress: Progress | None = None
) -> int:
    """
    Write a backup to C{out}: an uncompressed ustar tar of C{config} as
    C{midjobs.toml} (unless it is L{None}) and of C{database} (a copy from
    L{backup_database}) as C{midjobs.db}, ended by two zero blocks and
    padded to a whole tar record, as C{tar} writes it.

    @param progress: told the bytes of the database written so far; it may
        raise to stop.
    @return: the size of the database.
    """
    written = 0
    if config is not None:
        out.write(_header(CONFIG_NAME, len(config), time.time()))
        out.write(config + bytes(-len(config) % _BLOCK))
        written += _BLOCK + len(config) + -len(config) % _BLOCK
    with open(database, "rb", buffering=0) as db:
        st = os.fstat(db.fileno())
        out.write(_header(DATABASE_NAME, st.st_size, st.st_mtime))
        done = 0
        while done < st.st_size:
            chunk = db.read(min(_CHUNK, st.st_size - done))
            if not chunk:
                raise OSError(errno.EIO, f"{database} shrank while being archived")
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done)
    written += _BLOCK + st.st_size + -st.st_size % _BLOCK
    end = 2 * _BLOCK
    end += -(written + end) % tarfile.RECORDSIZE
    out.write(bytes(-st.st_size % _BLOCK + end))
    return st.st_size


# Reading a backup.


class _Blocks:
    """
    The stream of an uploaded tar, read exactly: a short read is the end of
    the upload.
    """

    def __init__(self, stream: BinaryIO, progress: Progress | None) -> None:
        self._stream = stream
        self._progress = progress
        self.done = 0

    def read(self, size: int) -> bytes:
        """
        Up to C{size} bytes: fewer only at the end of the stream.
        """
        pieces = []
        wanted = size
        while wanted:
            piece = self._stream.read(wanted)
            if not piece:
                break
            pieces.append(piece)
            wanted -= len(piece)
            self.done += len(piece)
            if self._progress is not None:
                self._progress(self.done)
        return b"".join(pieces)

    def exactly(self, size: int, what: str) -> bytes:
        data = self.read(size)
        if len(data) < size:
            raise BackupError(f"The tar archive is truncated: it ends {what}, after {self.done} bytes")
        return data


def _unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return not name or name.startswith(("/", "\\")) or ".." in parts or any(ord(c) < 32 for c in name)


def _expected(limits: Mapping[str, int]) -> str:
    return ", ".join(sorted(limits))


def _member(block: bytes, first: bool, received: Mapping[str, Path], limits: Mapping[str, int]) -> tarfile.TarInfo:
    """
    The tar header in C{block}, if it is one a backup may hold.
    """
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
    except (tarfile.HeaderError, UnicodeDecodeError, ValueError) as e:
        if first:
            raise BackupError(f"The upload is not a tar archive ({e})") from None
        raise BackupError(f"The tar archive is damaged: a bad header after {', '.join(received)} ({e})") from None
    name = info.name
    if info.type in _EXTENSION_TYPES:
        raise BackupError(
            "The tar archive uses pax or GNU extended headers, which a backup never has; "
            f"it must be a plain ustar archive holding only {_expected(limits)}"
        )
    if _unsafe(name):
        raise BackupError(f"The tar archive holds a member with an unsafe name: {name!r}")
    if name not in limits:
        raise BackupError(f"The tar archive holds {name!r}: a backup holds only {_expected(limits)}")
    if name in received:
        raise BackupError(f"The tar archive holds {name!r} twice")
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise BackupError(f"{name!r} in the tar archive is not a regular file")
    if info.size > limits[name]:
        raise BackupError(f"{name!r} in the tar archive is too large: {info.size} bytes, at most {limits[name]}")
    return info


def _receive_member(blocks: _Blocks, info: tarfile.TarInfo, target: Path) -> None:
    """
    Copy the data of C{info} to the new file C{target}, and skip its padding.
    """
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as file:
        left = info.size
        while left:
            chunk = blocks.read(min(left, _CHUNK))
            if not chunk:
                raise BackupError(
                    f"The tar archive is truncated: {info.name!r} should hold {info.size} bytes, "
                    f"it ends after {info.size - left}"
                )
            file.write(chunk)
            left -= len(chunk)
        file.flush()
        os.fsync(file.fileno())
    padding = -info.size % _BLOCK
    if padding:
        blocks.exactly(padding, f"inside {info.name!r}")


def _end_of_archive(blocks: _Blocks) -> None:
    """
    Check what follows the first zero block: a second one, then nothing but
    zero bytes (the padding of the last record).
    """
    if blocks.exactly(_BLOCK, "before its end marker") != _ZERO_BLOCK:
        raise BackupError("The tar archive is damaged: a lone zero block before more data")
    padding = 0
    while chunk := blocks.read(_CHUNK):
        padding += len(chunk)
        if chunk.count(0) != len(chunk) or padding > _MAX_PADDING:
            raise BackupError("The upload holds more data after the end of the tar archive")


def read_backup(
    stream: BinaryIO,
    directory: Path,
    *,
    limits: Mapping[str, int] = MEMBER_LIMITS,
    required: frozenset[str] = REQUIRED_MEMBERS,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """
    Read the backup tar in C{stream} into C{directory}: one file per member.

    The tar must be plain ustar (or GNU without extensions), hold only
    regular files named as the keys of C{limits}, each at most once and no
    larger than its limit, all of C{required}, and end with its end marker
    (two zero blocks) and nothing but zero bytes after.  Every header is
    checked before its data is read, so memory and disk stay bounded.

    @param progress: told the bytes read so far after each read.
    @return: the path of each member's file, by member name.
    @raise BackupError: it is not such a tar.  Files already written stay:
        the caller removes C{directory}.
    """
    blocks = _Blocks(stream, progress)
    received: dict[str, Path] = {}
    while True:
        block = blocks.read(_BLOCK)
        if len(block) < _BLOCK:
            if blocks.done == 0:
                raise BackupError("The upload is empty")
            if blocks.done < _BLOCK:
                raise BackupError(f"The upload is not a tar archive: it is only {blocks.done} bytes")
            raise BackupError(f"The tar archive is truncated: it ends without its end marker, after {blocks.done} bytes")
        if block == _ZERO_BLOCK:
            _end_of_archive(blocks)
            break
        info = _member(block, blocks.done == _BLOCK, received, limits)
        target = directory / info.name
        _receive_member(blocks, info, target)
        received[info.name] = target
    missing = sorted(required - received.keys())
    if missing:
        raise BackupError(f"The tar archive does not hold {', '.join(missing)}: it is not a midjobs backup")
    return received


def _integrity(connection: sqlite3.Connection) -> None:
    problems = [row[0] for row in connection.execute("PRAGMA integrity_check(10)")]
    if problems != ["ok"]:
        raise BackupError(f"{DATABASE_NAME} fails SQLite's integrity check: {'; '.join(map(str, problems))}")


def _check_schema(connection: sqlite3.Connection, parts: Sequence[SchemaPart]) -> None:
    tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        raise BackupError(f"{DATABASE_NAME} is an SQLite database, but not one of midjobs: it has no schema_version table")
    versions = dict(connection.execute("SELECT name, version FROM schema_version"))
    for part in parts:
        version = versions.get(part.name)
        if version is None:
            if part.required:
                raise BackupError(f"{DATABASE_NAME} has no {part.name!r} schema: it is not a midjobs database")
            continue
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise BackupError(f"{DATABASE_NAME} records a bad version of its {part.name!r} schema: {version!r}")
        if version > part.version:
            raise BackupError(
                f"{DATABASE_NAME} comes from a newer midjobs: its {part.name!r} schema is at version "
                f"{version}, this daemon knows {part.version}"
            )
        missing = [table for table in part.tables if table not in tables]
        if missing:
            raise BackupError(f"{DATABASE_NAME} lacks the table {', '.join(missing)} of its {part.name!r} schema")


def check_database(path: Path, parts: Sequence[SchemaPart]) -> None:
    """
    Check that C{path} is a whole SQLite database of the daemon: it opens,
    passes C{PRAGMA integrity_check}, has a C{schema_version} table, records
    each required part of C{parts}, no part newer than this code knows, and
    has each recorded part's tables.  The file is then switched to a
    rollback journal, so that it is whole on its own.

    The file must be a private copy: SQLite writes to it.  Its schema's
    SQL is treated as untrusted (C{PRAGMA trusted_schema = OFF}).

    @raise BackupError: what is wrong with it.
    """
    try:
        connection = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as e:
        raise BackupError(f"{DATABASE_NAME} cannot be opened: {e}") from None
    try:
        connection.execute("PRAGMA trusted_schema = OFF")
        connection.execute("PRAGMA cell_size_check = ON")
        _integrity(connection)
        _check_schema(connection, parts)
        connection.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.Error as e:
        raise BackupError(f"{DATABASE_NAME} is not a usable SQLite database: {e}") from None
    finally:
        connection.close()


# Staging and restoring.


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(path: Path, *, wait: bool) -> int | None:
    """
    Open the directory C{path} and take an exclusive C{flock} on it, which
    lasts until the descriptor is closed or the process ends.

    @return: the descriptor, or L{None} if another one holds the lock and
        C{wait} is false.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def scratch_directory(state_dir: Path) -> Iterator[Path]:
    """
    A new private directory in C{state_dir} (on the database's filesystem,
    where a copy of it fits as well as anywhere), removed with all it holds
    on the way out.  It is locked while in use; a crash leaves it unlocked
    for L{apply_pending_restore} to remove at the next start.
    """
    path = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, suffix=".tmp", dir=state_dir))
    fd = _lock(path, wait=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if fd is not None:
            os.close(fd)


def _install(staging: Path, pending: Path) -> None:
    """
    Make C{staging} the pending restore, in place of any older one.
    """
    old = None
    if os.path.lexists(pending):
        old = pending.with_name(f"{_TEMP_PREFIX}{secrets.token_hex(8)}.old")
        os.rename(pending, old)
    os.rename(staging, pending)
    _fsync_dir(pending.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def stage_restore(
    state_dir: Path,
    stream: BinaryIO,
    parts: Sequence[SchemaPart],
    *,
    check_config: Callable[[bytes], None] | None = None,
    progress: Progress | None = None,
) -> Path:
    """
    Read the backup tar in C{stream}, check it, and stage it in
    C{<state_dir>/restore} for L{apply_pending_restore} (replacing a restore
    staged before).

    Everything is written to a temporary directory of C{state_dir} first,
    fsynced, and renamed into place only once the whole backup has arrived
    and passed L{read_backup} and L{check_database} (against C{parts}) and,
    if it holds one, C{check_config} on the configuration file.  On any
    error nothing is staged and nothing else changes.

    @param check_config: given the configuration file's bytes; raises
        L{BackupError} if the daemon could not start with it.
    @param progress: told the bytes read so far after each read, and once
        more before the backup is staged; it may raise to stop.
    @return: the directory of the staged restore.
    @raise BackupError: the backup cannot be restored.
    """
    pending = state_dir / PENDING_DIR
    with scratch_directory(state_dir) as staging:
        members = read_backup(stream, staging, progress=progress)
        check_database(members[DATABASE_NAME], parts)
        if CONFIG_NAME in members and check_config is not None:
            check_config(members[CONFIG_NAME].read_bytes())
        for path in members.values():
            _fsync_file(path)
        _fsync_dir(staging)
        if progress is not None:
            progress(sum(path.stat().st_size for path in members.values()))
        _install(staging, pending)
    return pending


def _remove_leftovers(state_dir: Path) -> None:
    """
    Remove the temporary directories of L{scratch_directory} and L{_install}
    that a crash left in C{state_dir}: those no process holds locked.
    """
    for entry in state_dir.iterdir():
        if not entry.name.startswith(_TEMP_PREFIX) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            fd = _lock(entry, wait=False)
        except FileNotFoundError:
            continue
        if fd is None:
            continue  # In use by a daemon that runs on this state directory.
        try:
            shutil.rmtree(entry, ignore_errors=True)
        finally:
            os.close(fd)


def _self_contained(database: Path) -> None:
    """
    Fold the C{-wal} of C{database} into it (switching it to a rollback
    journal), so that the file alone is the whole database.

    @raise sqlite3.OperationalError: another process has the database open
        (it must not be swapped under it).  A damaged database is left as it
        is, its journal beside it.
    """
    connection = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.Error as e:
        if getattr(e, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise
        log.warn("The database {path} being replaced is damaged ({reason}): kept as it is", path=str(database), reason=e)
    finally:
        connection.close()


def apply_pending_restore(state_dir: Path) -> bool:
    """
    Restore the backup L{stage_restore} staged in C{state_dir}, if there is
    one: call it at start, before the database is opened.

    The current C{midjobs.db} becomes C{midjobs.db.bak} (replacing an older
    one), whole on its own (its C{-wal} folded in), and the staged database
    becomes C{midjobs.db}.  The staged configuration file, if any, becomes
    C{midjobs.restored.toml} beside it: the daemon's settings were read
    before this runs, so it is for the administrator to put in place.  Each
    step is a rename, in an order that a crash at any point leaves a state
    that the next call completes.  Temporary directories a crash left
    behind are removed too.

    @return: whether a restore was applied.
    @raise OSError: the state directory cannot be changed.
    @raise sqlite3.OperationalError: another process has the current
        database open (C{database is locked}): nothing was changed.
    """
    _remove_leftovers(state_dir)
    pending = state_dir / PENDING_DIR
    staged = pending / DATABASE_NAME
    if not staged.is_file():
        if os.path.lexists(pending):
            shutil.rmtree(pending)
        return False
    database = state_dir / DATABASE_NAME
    backup = state_dir / (DATABASE_NAME + BACKUP_SUFFIX)
    if database.exists():
        _self_contained(database)
        for suffix in (*_JOURNALS, "-shm"):
            Path(f"{backup}{suffix}").unlink(missing_ok=True)
        os.replace(database, backup)
    # With no database in place, whatever journal is left belongs to the backup.
    for suffix in _JOURNALS:
        journal = Path(f"{database}{suffix}")
        if journal.exists():
            os.replace(journal, f"{backup}{suffix}")
    Path(f"{database}-shm").unlink(missing_ok=True)
    config = pending / CONFIG_NAME
    if config.exists():
        os.replace(config, state_dir / RESTORED_CONFIG_NAME)
        log.info(
            "The configuration file of the restored backup is {path}: it is not in force; "
            "compare it with the daemon's and put it in place if wanted",
            path=str(state_dir / RESTORED_CONFIG_NAME),
        )
    os.replace(staged, database)
    _fsync_dir(state_dir)
    shutil.rmtree(pending)
    log.info(
        "Restored the database {database} from a configuration backup; the previous one is {backup}",
        database=str(database),
        backup=str(backup) if backup.exists() else "(none)",
    )
    return True

