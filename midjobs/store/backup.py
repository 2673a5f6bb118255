"""
Configuration backups: the daemon's database and configuration file in one
tar, and the checks a backup passes on the way back in.

A backup is an uncompressed tar (ustar) that holds C{midjobs.db}, a copy of
the database made with SQLite's online backup API (consistent however busy
the daemon is), and C{midjobs.toml}, the configuration file the daemon was
started with, if it had one.  L{write_backup} makes it; L{read_backup} reads
one strictly and L{check_database} checks its database.
L{midjobs.store.restore} puts a checked backup in place.  On a node of a
cluster, L{midjobs.store.pg_backup} makes the database from PostgreSQL.

Every function here blocks: call them from a thread job, or at start before
the reactor serves anyone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tarfile
import time
import urllib.parse
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

import attrs

from .database import DEFAULT_BUSY_TIMEOUT_MS

__all__ = [
    "CONFIG_NAME",
    "DATABASE_NAME",
    "MEMBER_LIMITS",
    "BackupError",
    "ByteSink",
    "ByteSource",
    "SchemaPart",
    "backup_database",
    "check_database",
    "fsync_file",
    "read_backup",
    "write_backup",
]

#: The database's file name, in the state directory and in a backup.
DATABASE_NAME = "midjobs.db"
#: The configuration file's name in a backup.
CONFIG_NAME = "midjobs.toml"
#: The most bytes each member of a backup may hold.
MEMBER_LIMITS: Mapping[str, int] = {DATABASE_NAME: 4 << 30, CONFIG_NAME: 1 << 20}
#: The members a backup must hold.
REQUIRED_MEMBERS = frozenset({DATABASE_NAME})

#: The most zero bytes accepted after the end of a tar (its last record's padding).
_MAX_PADDING = 1 << 20
_BLOCK = tarfile.BLOCKSIZE
_ZERO_BLOCK = bytes(_BLOCK)
_CHUNK = 1 << 20
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
    fsync_file(target)


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o600
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


class ByteSink(Protocol):
    """
    Where a backup is written: a binary file, or a job's output pipe.
    """

    def write(self, data: bytes, /) -> object:
        """
        Write all of C{data}.
        """


class ByteSource(Protocol):
    """
    Where a backup is read from: a binary file, or a job's input pipe.
    """

    def read(self, size: int, /) -> bytes:
        """
        Up to C{size} bytes; none at the end.
        """


def write_backup(
    out: ByteSink, database: Path, config: bytes | None, *, progress: Progress | None = None
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

    def __init__(self, stream: ByteSource, progress: Progress | None) -> None:
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
    stream: ByteSource,
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


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
