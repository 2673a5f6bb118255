"""
Embedded storage: an SQLite database behind one L{ConnectionPool} thread.

Every module that keeps state (users, job history, logs) shares the pool that
L{open_database} returns and adds its tables with L{ensure_schema}.
"""

from midjobs.store.database import close_database, ensure_schema, open_database

__all__ = ["close_database", "ensure_schema", "open_database"]
