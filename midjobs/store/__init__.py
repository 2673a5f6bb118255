"""
Embedded storage: an SQLite database behind one L{ConnectionPool} thread.

Every module that keeps state (users, job history, logs) shares the pool that
L{open_database} returns and adds its tables with L{ensure_schema}.  Job
history goes through L{IJobStore}; L{SQLiteJobStore} is the embedded one.
L{backup} makes configuration backups of the database, checks uploaded ones
and restores them at the next start (L{apply_pending_restore}).

The nodes of a cluster keep the same state in PostgreSQL instead, through the
same faces: L{midjobs.store.pg.PgDatabase} (the pool), L{midjobs.store.pg_jobs}
(the job store), L{midjobs.store.pg_schema} (the schema) and
L{midjobs.store.ids} (job ids).  They need psycopg (the C{postgresql} extra),
so they are imported from their modules, not from here.
"""

from midjobs.store._interfaces import IJobStore, JobRecord, StoreClosed
from midjobs.store.backup import BackupError, SchemaPart, backup_database, check_database, read_backup, write_backup
from midjobs.store.restore import apply_pending_restore, stage_restore
from midjobs.store.database import close_database, ensure_schema, open_database
from midjobs.store.history import CUT_OFF, JobHistory, query_jobs
from midjobs.store.jobs import READERS, SQLiteJobStore

__all__ = [
    "BackupError",
    "CUT_OFF",
    "IJobStore",
    "JobHistory",
    "JobRecord",
    "READERS",
    "SQLiteJobStore",
    "SchemaPart",
    "StoreClosed",
    "apply_pending_restore",
    "backup_database",
    "check_database",
    "close_database",
    "ensure_schema",
    "open_database",
    "query_jobs",
    "read_backup",
    "stage_restore",
    "write_backup",
]
