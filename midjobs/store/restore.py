"""
Restoring a configuration backup, in two steps.

L{stage_restore} reads an uploaded backup (L{midjobs.store.backup}) into a
private temporary directory of the state directory and checks all of it;
only if all is well does it rename that directory to C{<state_dir>/restore}.
The running daemon goes on with the database it has.  At the next start,
before the database is opened, L{apply_pending_restore} keeps the current
database as C{midjobs.db.bak} and moves the staged one in.

Every function here blocks: call them from a thread job, or at start before
the reactor serves anyone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..logs import logger
from .backup import (
    CONFIG_NAME,
    DATABASE_NAME,
    ByteSource,
    Progress,
    SchemaPart,
    check_database,
    fsync_file,
    read_backup,
)

__all__ = [
    "BACKUP_SUFFIX",
    "PENDING_DIR",
    "RESTORED_CONFIG_NAME",
    "apply_pending_restore",
    "scratch_directory",
    "stage_restore",
]

log = logger(__name__)

#: The directory of the state directory where a checked backup waits for the next start.
PENDING_DIR = "restore"
#: Added to the database's name for the one a restore replaced.
BACKUP_SUFFIX = ".bak"
#: Where a restore puts the configuration file of the backup, in the state directory.
RESTORED_CONFIG_NAME = "midjobs.restored.toml"

#: The prefix of the temporary directories of the state directory this module makes.
_TEMP_PREFIX = ".backup-"
#: The files SQLite keeps beside a database that belong to it; the C{-shm} is rebuilt.
_JOURNALS = ("-wal", "-journal")


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
    stream: ByteSource,
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
            fsync_file(path)
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

