"""
Embedded storage: an SQLite database behind one L{ConnectionPool} thread.

Every module that keeps state (users, job history, logs) shares the pool that
L{open_database} returns and adds its tables with L{ensure_schema}.  Job
history goes through L{IJobStore}; L{SQLiteJobStore} is the embedded one.
"""

from midjobs.store._interfaces import IJobStore, JobRecord, StoreClosed
from midjobs.store.database import close_database, ensure_schema, open_database
from midjobs.store.history import CUT_OFF, JobHistory, query_jobs
from midjobs.store.jobs import SQLiteJobStore

__all__ = [
    "CUT_OFF",
    "IJobStore",
    "JobHistory",
    "JobRecord",
    "SQLiteJobStore",
    "StoreClosed",
    "close_database",
    "ensure_schema",
    "open_database",
    "query_jobs",
]
