"""
The tokens of a cluster, in the PostgreSQL database its nodes share: a token
made on one node works on every other, and a single-use token is used once
across all of them.

Only the SHA-256 digest of a token is stored, never the token.  Using a
single-use token is one C{DELETE ... RETURNING}: of two nodes that present
it at the same moment, exactly one gets the row.  The live tokens of one
identity are counted in the transaction that adds one, under a transaction
advisory lock on that identity, so two nodes cannot both add the last one
allowed.  Times are the database's clock (C{clock_timestamp()}), the same for
every node.  Expired rows are ignored at once and deleted every
L{PRUNE_INTERVAL} seconds by each node (L{PgTokenStore} is a service).

The table (part C{cluster} of L{midjobs.store.pg_schema})::

    tokens (digest bytea PRIMARY KEY, kind text, user_id bigint,
            job_id bigint, expires double precision, data text)

C{kind} is a L{TokenKind}; C{data} is JSON: the rest of the user the token
stands for (L{User}'s fields, among them the API key and the web session it
derives from), its attributes and its origin.
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
from typing import Any, Final, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from ..logs import logger
from ..counts import NO_COUNTS, ICounts
from ..store.database import Cursor, Pool, Row
from .avatar import User
from .interfaces import IUser
from .tokens import (
    MAX_TOKEN_LENGTH,
    MAX_TOKENS_PER_USER,
    InvalidToken,
    ITokenStore,
    Token,
    TooManyTokens,
    check_scope,
    derived_from,
)

__all__ = ["PRUNE_INTERVAL", "PgTokenStore", "TokenKind", "digest_of"]

log = logger(__name__)

#: Seconds between two deletions of expired rows.
PRUNE_INTERVAL: Final = 60.0

#: The database's clock, in seconds since the epoch.
_NOW: Final = "extract(epoch from clock_timestamp())::float8"

#: Where a row keeps each identity a token derives from (L{derived_from}).
_DERIVED_FROM: Final = {
    "user_id": "user_id = ?",
    "api_key_id": "(data::jsonb ->> 'api_key_id')::bigint = ?",
    "web_session_id": "(data::jsonb ->> 'web_session_id')::bigint = ?",
}

#: The columns a token is read from, in L{_token}'s order.
_COLUMNS: Final = "kind, user_id, job_id, expires, data"


class TokenKind(enum.Enum):
    """
    What using a token does to it (the C{kind} column).
    """

    #: It stays until it expires or is revoked.
    REUSABLE = "REUSABLE"
    #: Its first use removes it.
    SINGLE_USE = "SINGLE_USE"


def digest_of(value: str) -> bytes:
    """
    What the table keeps of the token C{value}: its SHA-256 digest.
    """
    return hashlib.sha256(value.encode("utf-8")).digest()


def _data(user: IUser, attributes: Mapping[str, Any], origin: str | None) -> str:
    return json.dumps(
        {
            "username": user.username,
            "roles": sorted(user.roles),
            "credentials_type": user.credentials_type,
            "credentials_data": dict(getattr(user, "credentials_data", {})),
            "api_key_id": user.api_key_id,
            "web_session_id": user.web_session_id,
            "local_peer": bool(user.local_peer),
            "attributes": dict(attributes),
            "origin": origin,
        },
        separators=(",", ":"),
    )


def _token(value: str, row: Row) -> Token:
    kind, user_id, job_id, expires, text = row
    data: dict[str, Any] = json.loads(text)
    user = User(
        data["username"],
        frozenset(data["roles"]),
        data["credentials_type"],
        credentials_data=data["credentials_data"],
        user_id=user_id,
        api_key_id=data["api_key_id"],
        # Absent from the rows of a node that knew no web sessions' ids.
        web_session_id=data.get("web_session_id"),
        local_peer=data["local_peer"],
    )
    return Token(
        value=value,
        user=user,
        expires=float(expires),
        attributes=data["attributes"],
        single_use=TokenKind(kind) is TokenKind.SINGLE_USE,
        job_id=job_id,
        origin=data["origin"],
    )


def _well_formed(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TOKEN_LENGTH


@implementer(ITokenStore)
class PgTokenStore(Service):
    """
    The live tokens of a cluster, in its database.  As a service it deletes
    expired rows every L{PRUNE_INTERVAL} seconds while it runs.

    @ivar max_per_user: see L{ITokenStore.max_per_user}.
    @ivar counts: see L{ITokenStore.counts}.
    """

    def __init__(self, db: Pool, reactor: IReactorTime, *, max_per_user: int = MAX_TOKENS_PER_USER) -> None:
        """
        @param db: the cluster's database (a L{midjobs.store.pg.PgDatabase}),
            whose C{tokens} table exists.
        @param reactor: the clock of the pruning.
        """
        self._db = db
        self._clock = reactor
        self.max_per_user = max_per_user
        self.counts: ICounts = NO_COUNTS
        self._pruning: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # not annotated in Twisted
        self._pruning = LoopingCall(self._prune_quietly)
        self._pruning.clock = self._clock
        self._pruning.start(PRUNE_INTERVAL, now=False)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]  # not annotated in Twisted
        if self._pruning is not None and self._pruning.running:
            self._pruning.stop()
        self._pruning = None
        return None

    def prune(self) -> Deferred[int]:
        """
        Delete the expired rows; how many there were.
        """
        return self._db.runInteraction(_prune)

    def _prune_quietly(self) -> Deferred[None]:
        # A failure would stop the looping call: log it, try again next time.
        return self.prune().addCallbacks(
            lambda count: log.debug("Pruned {count} expired tokens", count=count),
            lambda failure: log.warn("Could not prune the expired tokens: {reason}", reason=failure.value),
        )

    def create(
        self,
        user: IUser,
        ttl: float,
        *,
        attrs: Mapping[str, Any] | None = None,
        single_use: bool = False,
        job_id: int | None = None,
        match_origin: str | None = None,
    ) -> Deferred[str]:
        if not ttl > 0:
            raise ValueError("A token needs a positive time to live")
        value = secrets.token_urlsafe(32)
        kind = TokenKind.SINGLE_USE if single_use else TokenKind.REUSABLE
        row = (digest_of(value), kind.value, user.user_id, job_id, float(ttl), _data(user, attrs or {}, match_origin))
        added = self._db.runInteraction(_create, row, self.max_per_user)

        def made(was_added: bool) -> str:
            if not was_added:
                self.counts.limit_hit("tokens_per_user")
                raise TooManyTokens(self.max_per_user)
            return value

        return added.addCallback(made)

    def count_of(self, user_id: int | None) -> Deferred[int]:
        return self._db.runInteraction(_count, user_id)

    def lookup(self, value: str) -> Deferred[Token | None]:
        if not _well_formed(value):
            return succeed(None)
        return self._db.runInteraction(_lookup, value)

    def check(self, value: str, *, job_id: int | None = None, origin: str | None = None) -> Deferred[Token]:
        return self.lookup(value).addCallback(lambda token: check_scope(token, job_id=job_id, origin=origin))

    def consume(self, value: str, *, job_id: int | None = None, origin: str | None = None) -> Deferred[Token]:
        if not _well_formed(value):
            return fail(InvalidToken("Invalid or expired token"))
        return self._db.runInteraction(_consume, value, job_id, origin)

    def revoke(self, value: str) -> Deferred[bool]:
        if not _well_formed(value):
            return succeed(False)
        return self._db.runInteraction(_revoke, digest_of(value))

    def revoke_derived(
        self, *, user_id: int | None = None, api_key_id: int | None = None, web_session_id: int | None = None
    ) -> Deferred[int]:
        name, identity = derived_from(user_id=user_id, api_key_id=api_key_id, web_session_id=web_session_id)
        return self._db.runInteraction(_revoke_where, _DERIVED_FROM[name], identity)


# The interactions, each one transaction in the database's thread.


def _create(cursor: Cursor, row: tuple[object, ...], limit: int) -> bool:
    digest, kind, user_id, job_id, ttl, data = row
    # One identity's tokens are counted and added by one transaction at a time, cluster-wide.
    identity = "peer" if user_id is None else str(user_id)
    cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"midjobs.tokens.{identity}",))
    cursor.execute(
        f"SELECT count(*) FROM tokens WHERE user_id IS NOT DISTINCT FROM ? AND expires > {_NOW}", (user_id,)
    )
    counted = cursor.fetchone()
    if counted is not None and int(counted[0]) >= limit:
        return False
    cursor.execute(
        f"INSERT INTO tokens (digest, kind, user_id, job_id, expires, data) VALUES (?, ?, ?, ?, {_NOW} + ?, ?)",
        (digest, kind, user_id, job_id, ttl, data),
    )
    return True


def _count(cursor: Cursor, user_id: int | None) -> int:
    cursor.execute(
        f"SELECT count(*) FROM tokens WHERE user_id IS NOT DISTINCT FROM ? AND expires > {_NOW}", (user_id,)
    )
    counted = cursor.fetchone()
    return 0 if counted is None else int(counted[0])


def _lookup(cursor: Cursor, value: str) -> Token | None:
    cursor.execute(f"SELECT {_COLUMNS} FROM tokens WHERE digest = ? AND expires > {_NOW}", (digest_of(value),))
    row = cursor.fetchone()
    return None if row is None else _token(value, row)


def _consume(cursor: Cursor, value: str, job_id: int | None, origin: str | None) -> Token:
    digest = digest_of(value)
    # A single-use token in scope: taken by exactly one of those who ask at once.
    cursor.execute(
        f"DELETE FROM tokens WHERE digest = ? AND expires > {_NOW} AND kind = ?"
        " AND job_id IS NOT DISTINCT FROM ?"
        " AND (data::jsonb ->> 'origin' IS NULL OR data::jsonb ->> 'origin' = ?)"
        f" RETURNING {_COLUMNS}",
        (digest, TokenKind.SINGLE_USE.value, job_id, origin),
    )
    taken = cursor.fetchone()
    if taken is not None:
        return _token(value, taken)
    # Otherwise a reusable one in scope, or the reason it may not be used.
    token = _lookup(cursor, value)
    checked = check_scope(token, job_id=job_id, origin=origin)
    if checked.single_use:
        # In scope, yet not taken above: another use took it meanwhile.
        raise InvalidToken("Invalid or expired token")
    return checked


def _revoke(cursor: Cursor, digest: bytes) -> bool:
    cursor.execute("DELETE FROM tokens WHERE digest = ? RETURNING kind", (digest,))
    return cursor.fetchone() is not None


def _revoke_where(cursor: Cursor, condition: str, value: int) -> int:
    cursor.execute(f"DELETE FROM tokens WHERE {condition} RETURNING expires > {_NOW}", (value,))
    return sum(1 for (live,) in cursor.fetchall() if live)


def _prune(cursor: Cursor) -> int:
    cursor.execute(f"DELETE FROM tokens WHERE expires <= {_NOW} RETURNING kind")
    return len(cursor.fetchall())
