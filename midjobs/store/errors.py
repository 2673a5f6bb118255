"""
What a database says, whatever its engine.

The stores' SQL runs on SQLite or PostgreSQL; the adapters of both engines
(L{midjobs.store.database} and L{midjobs.store.pg}) turn the engine's own
exceptions into these, so that code above the store catches them by name
and never imports C{sqlite3} or C{psycopg}.
"""

from __future__ import annotations

__all__ = ["Conflict", "MissingReference", "NewerSchema", "Unavailable"]


class Conflict(Exception):
    """
    A statement would have made two rows equal where a C{UNIQUE} or
    C{PRIMARY KEY} constraint says they must differ.  Its transaction is
    rolled back.
    """


class MissingReference(Exception):
    """
    A statement would have made a row refer to one that is not there (a
    C{FOREIGN KEY} constraint): what it referred to was deleted meanwhile.
    Its transaction is rolled back.
    """


class Unavailable(Exception):
    """
    The database cannot be reached: the connection was lost, the server is
    down or restarting, or no connection came free in time.  Nothing of the
    transaction was committed, or it cannot be known (a connection lost
    during the commit): try again later.
    """


class NewerSchema(RuntimeError):
    """
    The database was migrated by a newer midjobs than this one: its schema
    has statements this code does not know.  Upgrade midjobs.
    """
