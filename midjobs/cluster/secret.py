"""
The secret the nodes of a cluster share: the key of the credentials one
node shows another (a relayed download's, L{midjobs.transfers.DownloadRelay}).

The first node that asks makes it; every other reads the same one.  It never
leaves the database but to the nodes' memory.
"""

from __future__ import annotations

import secrets

from twisted.internet.defer import Deferred

from ..store.database import Cursor, Pool

__all__ = ["SECRET_BYTES", "shared_secret"]

#: The length of the secret: an HMAC-SHA256 key of the hash's own size.
SECRET_BYTES = 32


def _take(txn: Cursor, candidate: bytes) -> bytes:
    txn.execute("INSERT INTO cluster_secret (id, secret) VALUES (1, ?) ON CONFLICT (id) DO NOTHING", (candidate,))
    txn.execute("SELECT secret FROM cluster_secret WHERE id = 1")
    row = txn.fetchone()
    assert row is not None  # inserted just now, or before
    return bytes(row[0])


def shared_secret(db: Pool) -> Deferred[bytes]:
    """
    The cluster's secret, made now if no node made it before.
    """
    return db.runInteraction(_take, secrets.token_bytes(SECRET_BYTES))
