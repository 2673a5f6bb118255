"""
API keys: long-lived secrets that log a program in as one user.

A key is C{"<id>-<secret>"}: the id of its row in the C{api_keys} table and
64 random URL-safe characters.  It is shown once, when L{ApiKeyStore.create}
makes it; the table keeps only a salted HMAC-SHA256 digest of the secret.
A key is high-entropy, so a fast digest compared in constant time is enough:
no slow password hash is needed, and checking one never leaves the reactor
for more than a database query.

A key is presented as L{APIKeyCredentials} (C{Authorization: Bearer <key>},
C{auth.login_with_api_key}, or C{auth.login_ex} with C{API_KEY_PLAIN}, which
also names the user).  The L{APIKeyChecker} on the portal vouches for the
key's user with an L{AvatarId} of kind L{API_KEY}, and the realm gives that
user's current roles.  A key whose user is locked logs nobody in; a user's
keys are deleted with the user (C{ON DELETE CASCADE}).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import errno
import hashlib
import hmac
import os
import re
import secrets
import time
from typing import Any, Final, Mapping

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from zope.interface import Attribute, implementer

from midjobs.auth.avatar import AvatarId
from midjobs.errors import CallError, ValidationErrors
from midjobs.store.database import Cursor, Pool, Row, ensure_schema
from midjobs.store.errors import Conflict, MissingReference

__all__ = [
    "API_KEY",
    "API_KEYS_SCHEMA",
    "APIKeyChecker",
    "APIKeyCredentials",
    "ApiKeyDict",
    "ApiKeyStore",
    "IAPIKey",
    "api_key_store_of",
    "hash_secret",
    "parse_key",
    "secret_matches",
]

#: Logged in with an API key.
API_KEY: Final = "API_KEY"

#: Longest name of a key.
MAX_NAME_LENGTH: Final = 200

#: Random bytes in a key's secret: 48 bytes are 64 URL-safe characters.
SECRET_BYTES: Final = 48

#: The one message for every refused key, whatever the reason.
BAD_KEY: Final = "Invalid API key"

#: An API key as the store returns it: id, name, username, created_at (and
#: key, only from L{ApiKeyStore.create}).
ApiKeyDict = dict[str, Any]

#: The schema history of the C{api_keys} part (see L{ensure_schema}).  Keys
#: refer to their user, and go when the user goes.  AUTOINCREMENT: the id of a
#: deleted key is never given again.
API_KEYS_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS api_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL,
        created REAL NOT NULL,
        UNIQUE (user_id, name)
    )
    """,
)

# The id (no leading zero, at most SQLite's largest integer), a dash, and the
# secret as secrets.token_urlsafe(SECRET_BYTES) makes it.
_KEY = re.compile(r"([1-9][0-9]{0,18})-([A-Za-z0-9_-]{64})")
_MAX_ID = 2**63 - 1

_SCHEME = "hmac-sha256"
_SALT_BYTES = 16
_FIELDS = frozenset({"name", "username"})
_COLUMNS = "k.id, k.name, u.username, k.created"
_FROM = "api_keys AS k JOIN users AS u ON u.id = k.user_id"


class IAPIKey(ICredentials):
    """
    An API key, sent as C{Authorization: Bearer <key>} or to
    C{auth.login_with_api_key} or C{auth.login_ex}.
    """

    key = Attribute("The key as the client sent it (C{str}).")
    username = Attribute(
        "The user the key must belong to (C{str}), as C{API_KEY_PLAIN} names "
        "them; C{None} if the key alone says whose it is."
    )


@implementer(IAPIKey)
@attrs.frozen(repr=False)
class APIKeyCredentials:
    key: str
    username: str | None = None

    def __repr__(self) -> str:
        return f"APIKeyCredentials(<secret>, username={self.username!r})"


def parse_key(key: object) -> tuple[int, str] | None:
    """
    The id and secret of a well-formed key, or C{None} for anything else
    (not a C{str}, not ASCII, no dash, an id out of range, a secret of the
    wrong length or alphabet).
    """
    if not isinstance(key, str) or len(key) > 96 or not key.isascii():
        return None
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    id_ = int(match.group(1))
    if id_ > _MAX_ID:
        return None
    return id_, match.group(2)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode("ascii"), hashlib.sha256).digest()


def hash_secret(secret: str) -> str:
    """
    The stored form of a key's secret: C{hmac-sha256$<b64 salt>$<b64 digest>}.
    """
    salt = os.urandom(_SALT_BYTES)
    return f"{_SCHEME}${_b64(salt)}${_b64(_digest(salt, secret))}"


def secret_matches(secret: str, encoded: str) -> bool:
    """
    Whether C{secret} is the one L{hash_secret} encoded; C{False} if
    C{encoded} is malformed.
    """
    scheme, _, rest = encoded.partition("$")
    salt_text, _, digest_text = rest.partition("$")
    if scheme != _SCHEME:
        return False
    try:
        salt = base64.b64decode(salt_text, validate=True)
        expected = base64.b64decode(digest_text, validate=True)
    except (ValueError, binascii.Error):
        return False
    if not salt:
        return False
    return hmac.compare_digest(_digest(salt, secret), expected)


#: Checked in place of an unknown key's digest, so that an unknown id costs
#: the same work as a wrong secret.
_DUMMY_HASH = hash_secret(secrets.token_urlsafe(SECRET_BYTES))


def _row_to_key(row: Row) -> ApiKeyDict:
    id_, name, username, created = row
    return {
        "id": id_,
        "name": name,
        "username": username,
        "created_at": datetime.datetime.fromtimestamp(created, datetime.timezone.utc),
    }


def _validate(data: object) -> tuple[dict[str, Any], ValidationErrors]:
    """
    Check the shape of C{data}; return the clean fields and the errors found.

    Whether the user exists and the name is free needs the database and is
    checked in the transaction that adds the key.
    """
    errors = ValidationErrors()
    if not errors.add_field_errors(data, _FIELDS, ("name", "username")):
        return {}, errors
    assert isinstance(data, Mapping)
    clean: dict[str, Any] = {}
    if "name" in data:
        name = data["name"]
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
            errors.add("name", f"Expected a string of 1 to {MAX_NAME_LENGTH} characters")
        else:
            clean["name"] = name
    if "username" in data:
        username = data["username"]
        if not isinstance(username, str) or not username:
            errors.add("username", "Expected a non-empty string")
        else:
            clean["username"] = username
    return clean, errors


_NO_USER = "User does not exist"
_NAME_TAKEN = "This user already has an API key with this name"


def _not_found(id_: object) -> CallError:
    return CallError(f"API key {id_!r} does not exist", errno.ENOENT)


class ApiKeyStore:
    """
    API keys in the C{api_keys} table, beside the C{users} table of the
    same pool (a L{midjobs.auth.users.UserStore}'s C{pool}).

    Call L{setup} once, after the user store's, before anything else.
    """

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def setup(self) -> Deferred[int]:
        """
        Create or migrate the C{api_keys} table.
        """
        return ensure_schema(self._pool, "api_keys", API_KEYS_SCHEMA)

    # Reading

    def get(self, id: int) -> Deferred[ApiKeyDict]:
        """
        The key with this id, without its secret; fails with
        C{CallError(ENOENT)} if there is none.
        """

        def found(rows: list[Row]) -> ApiKeyDict:
            if not rows:
                raise _not_found(id)
            return _row_to_key(rows[0])

        d = self._pool.runQuery(f"SELECT {_COLUMNS} FROM {_FROM} WHERE k.id = ?", (id,))
        return d.addCallback(found)

    def query(self) -> Deferred[list[ApiKeyDict]]:
        """
        All keys, by id, without their secrets.
        """
        d = self._pool.runQuery(f"SELECT {_COLUMNS} FROM {_FROM} ORDER BY k.id")
        return d.addCallback(lambda rows: [_row_to_key(row) for row in rows])

    def authenticate(self, key: object, username: object = None) -> Deferred[ApiKeyDict | None]:
        """
        The key C{key} stands for, if it is one and may log in now (its user
        is not locked, and is C{username} if that is given), else C{None}.

        @return: a L{Deferred} firing with C{{"id", "name", "username",
            "user_id"}} or C{None}.
        """
        return Deferred.fromCoroutine(self._authenticate(key, username))

    async def _authenticate(self, key: object, username: object = None) -> ApiKeyDict | None:
        parsed = parse_key(key)
        if parsed is None:
            return None
        id_, secret = parsed
        rows = await self._pool.runQuery(
            f"SELECT k.name, k.key_hash, u.username, u.locked, u.id FROM {_FROM} WHERE k.id = ?", (id_,)
        )
        matches = secret_matches(secret, rows[0][1] if rows else _DUMMY_HASH)
        if not rows or not matches:
            return None
        name, _, owner, locked, user_id = rows[0]
        if locked or (username is not None and username != owner):
            return None
        return {"id": id_, "name": name, "username": owner, "user_id": user_id}

    # Writing

    def create(self, data: Mapping[str, Any]) -> Deferred[ApiKeyDict]:
        """
        Make a key for a user; fire with its record and, this once, the key.

        C{data} is C{{"name": ..., "username": ...}}: the user must exist, and
        the name (1 to 200 characters) be new among that user's keys.  Fails
        with L{ValidationErrors} otherwise, and adds nothing.
        """
        return Deferred.fromCoroutine(self._create(data))

    async def _create(self, data: Mapping[str, Any]) -> ApiKeyDict:
        clean, errors = _validate(data)
        if "username" not in clean:
            errors.check()
        secret = secrets.token_urlsafe(SECRET_BYTES)
        id_ = await self._pool.runInteraction(
            self._insert, clean["username"], clean.get("name"), hash_secret(secret), errors
        )
        record: ApiKeyDict = await self.get(id_)
        record["key"] = f"{id_}-{secret}"
        return record

    @staticmethod
    def _insert(
        txn: Cursor, username: str, name: str | None, key_hash: str, errors: ValidationErrors
    ) -> int:
        txn.execute("SELECT id FROM users WHERE username = ?", (username,))
        row = txn.fetchone()
        if row is None:
            errors.add("username", _NO_USER, errno.ENOENT)
        elif name is not None:
            txn.execute("SELECT 1 FROM api_keys WHERE user_id = ? AND name = ?", (row[0], name))
            if txn.fetchone() is not None:
                errors.add("name", _NAME_TAKEN, errno.EEXIST)
        errors.check()
        assert row is not None  # errors.check() raised otherwise
        # One transaction on the pool's one connection: nothing of ours comes
        # between these checks and the insert, but another process might.
        try:
            txn.execute(
                "INSERT INTO api_keys (user_id, name, key_hash, created) VALUES (?, ?, ?, ?) RETURNING id",
                (row[0], name, key_hash, time.time()),
            )
        except Conflict:
            errors.add("name", _NAME_TAKEN, errno.EEXIST)
            raise errors from None
        except MissingReference:
            errors.add("username", _NO_USER, errno.ENOENT)
            raise errors from None
        inserted = txn.fetchone()
        assert inserted is not None  # an INSERT ... RETURNING answers its row
        return int(inserted[0])

    def delete(self, id: int) -> Deferred[None]:
        """
        Remove a key: it logs nobody in from now on.  Fails with
        C{CallError(ENOENT)} if there is none.
        """

        def delete(txn: Cursor) -> None:
            txn.execute("DELETE FROM api_keys WHERE id = ?", (id,))
            if txn.rowcount == 0:
                raise _not_found(id)

        return self._pool.runInteraction(delete)


@implementer(ICredentialsChecker)
class APIKeyChecker:
    """
    Accepts a key of L{ApiKeyStore} whose user is not locked (and is the
    user the credentials name, if they name one).  Every refusal is the same
    L{UnauthorizedLogin}.

    The avatar id carries C{{"api_key": {"id", "name"}}} as its
    C{credentials_data}, so a job records which key started it, never the key.

    @ivar store: the L{ApiKeyStore} it checks against.
    """

    credentialInterfaces = (IAPIKey,)

    def __init__(self, store: ApiKeyStore) -> None:
        self.store = store

    def requestAvatarId(self, credentials: IAPIKey) -> Deferred[AvatarId]:  # type: ignore[override]  # twisted.cred's annotations say an avatar id is bytes; any value goes
        d = self.store.authenticate(credentials.key, getattr(credentials, "username", None))

        def vouch(found: ApiKeyDict | None) -> AvatarId:
            if found is None:
                raise UnauthorizedLogin(BAD_KEY)
            api_key = {"id": found["id"], "name": found["name"]}
            return AvatarId(
                found["username"],
                API_KEY,
                credentials_data={"api_key": api_key},
                user_id=found["user_id"],
                api_key_id=found["id"],
            )

        return d.addCallback(vouch)


def api_key_store_of(portal: object) -> ApiKeyStore | None:
    """
    The store of the L{APIKeyChecker} registered on C{portal}, if there is one.
    """
    checker = getattr(portal, "checkers", {}).get(IAPIKey)
    return checker.store if isinstance(checker, APIKeyChecker) else None
