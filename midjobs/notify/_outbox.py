"""
The durable outbox: notifications not yet delivered, in a table of the
daemon's SQLite database (C{midjobs.db}), through its database pool.

A notification is written here before any attempt to deliver it, and
removed once delivered or given up, so a daemon that stops (or dies) with
notifications pending delivers them after its next start.  Each attempt is
claimed in the table first: its attempt count and the time of the next
attempt are written before the request goes out, so an attempt cut short
by a crash counts, and is tried again after its back-off.

Every statement runs in the pool's thread, never on the reactor's.
"""

from __future__ import annotations

from typing import Callable, Collection, Iterable

import attrs
from twisted.internet.defer import Deferred

from ..store.database import Cursor, Pool, Row, ensure_schema

__all__ = ["OUTBOX_SCHEMA", "Claimed", "Dropped", "Notification", "Outbox"]

#: The schema history of the C{webhook_outbox} part (see L{ensure_schema}).
OUTBOX_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS webhook_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery TEXT UNIQUE NOT NULL,
        url TEXT NOT NULL,
        job_id INTEGER NOT NULL,
        body BLOB NOT NULL,
        created REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS webhook_outbox_next_attempt ON webhook_outbox (next_attempt)",
)

_COLUMNS = "id, delivery, url, job_id, body, created, attempts"


@attrs.frozen
class Notification:
    """
    One job's end to tell one webhook.

    @ivar id: its row in the outbox (C{None} before it is written).
    @ivar delivery: its delivery id, the same for each attempt.
    @ivar url: the webhook's URL (without credentials).
    @ivar job_id: the job whose end it tells.
    @ivar body: the JSON body POSTed.
    @ivar created: when it was queued (seconds since the epoch).
    @ivar attempts: the attempts made so far, the one claimed included.
    """

    id: int | None
    delivery: str
    url: str
    job_id: int
    body: bytes = attrs.field(repr=False)
    created: float
    attempts: int = 0


@attrs.frozen
class Dropped:
    """
    What L{Outbox.add} did: the notifications it dropped, oldest first, to
    stay within its limit, and how many are pending now.
    """

    dropped: list[Notification]
    pending: int


@attrs.frozen
class Claimed:
    """
    What L{Outbox.claim} found: the notifications to try now, when the next
    one is due (C{None}: none left), and how many are pending.
    """

    notifications: list[Notification]
    next_due: float | None
    pending: int


def _count(txn: Cursor) -> int:
    txn.execute("SELECT count(*) FROM webhook_outbox")
    row = txn.fetchone()
    assert row is not None  # an aggregate has one row
    return int(row[0])


def _notification(row: Row) -> Notification:
    id_, delivery, url, job_id, body, created, attempts = row
    return Notification(id_, delivery, url, job_id, bytes(body), created, attempts)


class Outbox:
    """
    The notifications not yet delivered, in the C{webhook_outbox} table.
    """

    def __init__(self, pool: Pool) -> None:
        """
        @param pool: the daemon's database pool (one writing connection).
        """
        self._pool = pool

    def setup(self) -> Deferred[int]:
        """
        Create or migrate the table.
        """
        return ensure_schema(self._pool, "webhook_outbox", OUTBOX_SCHEMA)

    def count(self) -> Deferred[int]:
        """
        How many notifications are pending.
        """
        return self._pool.runInteraction(_count)

    def add(self, notifications: Iterable[Notification], limit: int) -> Deferred[Dropped]:
        """
        Queue C{notifications}, due at once; then, if more than C{limit}
        are pending, drop the oldest (whether or not an attempt is under way).
        """
        rows = [(n.delivery, n.url, n.job_id, n.body, n.created, n.created) for n in notifications]

        def add(txn: Cursor) -> Dropped:
            txn.executemany(
                "INSERT INTO webhook_outbox (delivery, url, job_id, body, created, next_attempt) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            pending = _count(txn)
            dropped: list[Notification] = []
            if pending > limit:
                txn.execute(f"SELECT {_COLUMNS} FROM webhook_outbox ORDER BY id LIMIT ?", (pending - limit,))
                dropped = [_notification(row) for row in txn.fetchall()]
                txn.executemany("DELETE FROM webhook_outbox WHERE id = ?", [(n.id,) for n in dropped])
                pending -= len(dropped)
            return Dropped(dropped, pending)

        return self._pool.runInteraction(add)

    def claim(
        self, now: float, most: int, delay: Callable[[int], float], exclude: Collection[int] = ()
    ) -> Deferred[Claimed]:
        """
        Claim up to C{most} notifications due at C{now}, the longest due
        first, but those of C{exclude} (rows whose attempt is under way):
        count their attempt and set their next one C{delay(attempt)} seconds
        from now, so that one whose attempt a crash cuts short is tried again
        then.  The next one due is looked for among the rest.
        """
        excluded = list(exclude)
        not_excluded = f"id NOT IN ({', '.join('?' * len(excluded))})" if excluded else "1"

        def claim(txn: Cursor) -> Claimed:
            claimed: list[Notification] = []
            if most > 0:
                txn.execute(
                    f"SELECT {_COLUMNS} FROM webhook_outbox WHERE next_attempt <= ? AND {not_excluded} "
                    "ORDER BY next_attempt, id LIMIT ?",
                    (now, *excluded, most),
                )
                for row in txn.fetchall():
                    found = _notification(row)
                    claimed.append(attrs.evolve(found, attempts=found.attempts + 1))
                txn.executemany(
                    "UPDATE webhook_outbox SET attempts = ?, next_attempt = ? WHERE id = ?",
                    [(n.attempts, now + delay(n.attempts), n.id) for n in claimed],
                )
            excluded_now = [*excluded, *(n.id for n in claimed)]
            where = f"WHERE id NOT IN ({', '.join('?' * len(excluded_now))})" if excluded_now else ""
            txn.execute(f"SELECT min(next_attempt) FROM webhook_outbox {where}", excluded_now)
            found_next = txn.fetchone()
            assert found_next is not None  # an aggregate has one row
            (next_due,) = found_next
            return Claimed(claimed, next_due, _count(txn))

        return self._pool.runInteraction(claim)

    def retry_at(self, notification: Notification, when: float) -> Deferred[None]:
        """
        Make C{notification} due at C{when} (seconds since the epoch).
        """
        return self._pool.runOperation(
            "UPDATE webhook_outbox SET next_attempt = ? WHERE id = ?", (when, notification.id)
        )

    def remove(self, notification: Notification) -> Deferred[int]:
        """
        Remove C{notification} (delivered or given up); fire with how many are pending.
        """

        def remove(txn: Cursor) -> int:
            txn.execute("DELETE FROM webhook_outbox WHERE id = ?", (notification.id,))
            return _count(txn)

        return self._pool.runInteraction(remove)
