"""
C{config.*}: configuration backups to download, and restores to upload.

C{config.save} streams a tar of the daemon's database (a consistent copy
made with SQLite's online backup API) and its configuration file;
C{config.upload} checks such a tar and stages it, so that the next start of
the daemon restores it.  The work is done by L{midjobs.store.backup} and L{midjobs.store.restore}.

On a node of a cluster (C{[database] url}) the users, keys and jobs are in
PostgreSQL: C{config.save} writes the same backup, its database copied from
there (L{midjobs.store.pg_backup}), so that it restores on a single daemon;
C{config.upload} is refused, since the cluster restores with C{pg_restore}.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import tomllib
from pathlib import Path
from typing import Callable, Iterator

from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread

from ..auth.api_keys import API_KEYS_SCHEMA
from ..auth.users import USERS_SCHEMA
from ..config import ConfigError, Settings
from ..errors import CallError
from ..job import Job, JobAborted
from ..logs import logger
from ..progress import JobProgressBuffer
from ..service import Service, job
from ..store.backup import CONFIG_NAME, DATABASE_NAME, MEMBER_LIMITS, BackupError, SchemaPart, backup_database, write_backup
from ..store.errors import Unavailable
from ..store.jobs import JOBS_SCHEMA
from ..store.pg_backup import copy_catalogue
from ..store.restore import scratch_directory, stage_restore

__all__ = ["SCHEMA_PARTS", "SQLITE_SCHEMAS", "ConfigService", "check_config"]

log = logger(__name__)

#: The parts of the schema a restored database is checked against: every
#: database has C{users}; C{jobs} only with job history on, C{api_keys} once
#: a key was made.  Parts of plugins are not checked.
SCHEMA_PARTS = (
    SchemaPart("users", len(USERS_SCHEMA), ("users",)),
    SchemaPart("jobs", len(JOBS_SCHEMA), ("jobs",), required=False),
    SchemaPart("api_keys", len(API_KEYS_SCHEMA), ("api_keys",), required=False),
)

#: The SQLite statements of each part a cluster's backup is built with
#: (L{copy_catalogue}): those the embedded daemon's stores run.
SQLITE_SCHEMAS = {"users": USERS_SCHEMA, "api_keys": API_KEYS_SCHEMA, "jobs": JOBS_SCHEMA}


@contextlib.contextmanager
def _state_errors(doing: str) -> Iterator[None]:
    """
    Turn a failure of the disk or of SQLite while C{doing} into a
    L{CallError} that says so, with the C{OSError}'s errno (C{ENOSPC}, ...).
    """
    try:
        yield
    except OSError as e:
        raise CallError(f"Cannot {doing}: {e.strerror or e}", e.errno or errno.EIO) from None
    except (sqlite3.Error, Unavailable) as e:
        raise CallError(f"Cannot {doing}: {e}", errno.EIO) from None


def check_config(data: bytes) -> None:
    """
    Check that the daemon could start with the configuration file C{data}:
    UTF-8 TOML whose every key is known and valid.

    @raise BackupError: it could not.
    """
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BackupError(f"{CONFIG_NAME} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise BackupError(f"{CONFIG_NAME} is not valid TOML: {e}") from None
    try:
        Settings().updated_from(document, CONFIG_NAME)
    except ConfigError as e:
        raise BackupError(str(e)) from None


class ConfigService(Service):
    """
    Backups of the daemon's state and configuration.
    """

    namespace = "config"

    def _config_file(self) -> Path | None:
        """
        The configuration file the daemon was started with, or L{None}: the
        settings' C{config_file}, the TOML file they were read from (settings
        made without a file have none).
        """
        path = getattr(self.middleware.settings, "config_file", None)
        return Path(path) if path else None

    def _read_config(self) -> bytes | None:
        path = self._config_file()
        if path is None:
            return None
        limit = MEMBER_LIMITS[CONFIG_NAME]
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except OSError as e:
            raise CallError(f"Cannot read the configuration file {path}: {e.strerror}", e.errno or errno.EIO) from None
        if len(data) > limit:
            raise CallError(f"The configuration file {path} is larger than {limit} bytes", errno.EFBIG)
        return data

    def _cluster_database(self) -> str | None:
        """
        The cluster's database as a log line may show it, if this daemon is
        a node of one, or L{None}.
        """
        settings = self.middleware.settings
        if getattr(settings, "database_url", None) is None:
            return None
        display: str = settings.database_display
        return display

    def _copy_cluster_database(self, job: Job, target: Path, progress: JobProgressBuffer) -> None:
        """
        Make C{target} the SQLite database of a backup of the cluster, from
        the job's thread: the rows are read in the database's threads.
        """

        def report(done: int, total: int) -> None:
            if job.aborted.is_set():
                raise JobAborted()
            progress.set_progress(10 * done / max(total, 1), f"{done} of {total} rows copied", {"rows": done})

        assert self.middleware.users is not None  # a node of a cluster has its catalogue
        database = self.middleware.users.pool

        def start() -> Deferred[int]:
            return Deferred.fromCoroutine(copy_catalogue(database, target, SQLITE_SCHEMAS, progress=report))

        # Spelt as the union blockingCallFromThread's signature names, for mypy to infer int.
        copy: Callable[[], Deferred[int]] | Callable[[], int] = start
        rows = blockingCallFromThread(self.middleware.reactor, copy)
        log.info("Job {job_id}: copied {rows} rows of the cluster's database for its backup", job_id=job.id, rows=rows)

    @job(pipes=["output"], abortable=True, description=lambda: "Saving a configuration backup")
    def save(self, job: Job) -> None:
        """
        Write a configuration backup to the output pipe (a download): an
        uncompressed tar of C{midjobs.db}, a consistent copy of the daemon's
        database, and C{midjobs.toml}, the configuration file the daemon was
        started with (if it was).  The database holds the users' password
        hashes: keep the backup private.

        On a node of a cluster, C{midjobs.db} is made of the cluster's
        users, API keys and job records, copied from PostgreSQL into the
        schema of a single daemon's database (L{copy_catalogue}).
        """
        state_dir = Path(self.middleware.state_dir)
        assert job.pipes.output is not None  # the job declares its output pipe
        output = job.pipes.output.w
        config = self._read_config()
        progress = JobProgressBuffer(job)
        try:
            with contextlib.ExitStack() as stack:
                job.set_progress(0, "Copying the database")
                with _state_errors("copy the database"):
                    copy = stack.enter_context(scratch_directory(state_dir)) / DATABASE_NAME
                    if self._cluster_database() is None:
                        backup_database(state_dir / DATABASE_NAME, copy)
                    else:
                        self._copy_cluster_database(job, copy, progress)
                    size = copy.stat().st_size
                if size > MEMBER_LIMITS[DATABASE_NAME]:
                    raise CallError(
                        f"The database is {size} bytes, more than a backup may hold "
                        f"({MEMBER_LIMITS[DATABASE_NAME]}): it could not be restored",
                        errno.EFBIG,
                    )

                def report(done: int) -> None:
                    if job.aborted.is_set():
                        raise JobAborted()
                    progress.set_progress(10 + 90 * done / size, f"{done} of {size} bytes sent", {"bytes": done})

                report(0)
                write_backup(output, copy, config, progress=report)
        finally:
            progress.flush()
        output.close()
        job.set_progress(100, "Configuration backup sent")

    @job(
        pipes=["input"],
        lock="config.upload",
        abortable=True,
        description=lambda: "Uploading a configuration backup",
    )
    def upload(self, job: Job) -> None:
        """
        Check the uploaded configuration backup (a tar that C{config.save}
        wrote) and stage it: the next start of the daemon restores its
        database, keeping the current one as C{midjobs.db.bak}, and puts its
        configuration file beside it as C{midjobs.restored.toml}.  Until
        then nothing changes.

        A backup that is not such a tar, holds anything else, is truncated,
        too large, or whose database is damaged or not the daemon's fails
        with C{EINVAL} and changes nothing.  Uploading again replaces a
        backup staged before.

        A node of a cluster refuses at once, with C{ENOTSUP}, before it
        reads the upload: what a restore would replace is in PostgreSQL.
        """
        cluster = self._cluster_database()
        if cluster is not None:
            raise CallError(
                f"This daemon is a node of the cluster on {cluster}: its users, API keys and jobs are in that "
                "PostgreSQL database, which config.upload does not restore. Restore the database with "
                "pg_restore (from a pg_dump of it), or restore this backup on a daemon on SQLite",
                errno.ENOTSUP,
            )
        state_dir = Path(self.middleware.state_dir)
        progress = JobProgressBuffer(job)
        assert job.pipes.input is not None  # the job declares its input pipe

        def report(done: int) -> None:
            if job.aborted.is_set():
                raise JobAborted()
            progress.set_progress(None, f"{done} bytes received", {"bytes": done})

        try:
            with _state_errors("stage the backup"):
                pending = stage_restore(
                    state_dir,
                    job.pipes.input.r,
                    SCHEMA_PARTS,
                    check_config=check_config,
                    progress=report,
                )
        except BackupError as e:
            raise CallError(str(e), errno.EINVAL) from None
        finally:
            progress.flush()
        log.info(
            "Job {job_id}: a configuration backup is staged in {pending}; it is restored at the next start",
            job_id=job.id,
            pending=str(pending),
        )
        job.set_progress(100, "Configuration backup staged: restart the daemon to restore it")

