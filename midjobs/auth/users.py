"""
The user store: accounts with a password hash and roles, in the database pool
(SQLite, or PostgreSQL shared by the nodes of a cluster).

Users leave this module as plain dicts that never carry the password or its
hash.  Hashing runs in the reactor's thread pool and SQL in the database pool's
thread, so no method blocks the reactor.
"""

from __future__ import annotations

import errno
import functools
import json
import re
import secrets
import time
from typing import Any, Callable, Mapping, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.threads import deferToThread

from midjobs.auth.hashing import hash_password, verify_password
from midjobs.auth.roles import is_role_name
from midjobs.errors import CallError, ValidationErrors
from midjobs.store.database import Cursor, Pool, Row, ensure_schema
from midjobs.store.errors import Conflict

__all__ = ["USERS_SCHEMA", "UserDict", "UserStore"]

#: A user as the store returns it: id, username, full_name, roles, locked.
UserDict = dict[str, Any]

#: The schema history of the C{users} part (see L{ensure_schema}).
USERS_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT UNIQUE NOT NULL,
        full_name TEXT NOT NULL DEFAULT '',
        password_hash TEXT NOT NULL,
        roles TEXT NOT NULL,
        locked INTEGER NOT NULL DEFAULT 0,
        created REAL
    )
    """,
)

_USERNAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}")
_FIELDS = frozenset({"username", "password", "full_name", "roles", "locked"})
_COLUMNS = "id, username, full_name, roles, locked"


def _row_to_user(row: Row) -> UserDict:
    id_, username, full_name, roles, locked = row
    return {
        "id": id_,
        "username": username,
        "full_name": full_name,
        "roles": json.loads(roles),
        "locked": bool(locked),
    }


def _validate(data: object, *, creating: bool) -> tuple[dict[str, Any], ValidationErrors]:
    """
    Check the shape of C{data}; return the clean fields and the errors found.

    Uniqueness of the username needs the database and is checked by the caller.
    """
    errors = ValidationErrors()
    if not errors.add_field_errors(data, _FIELDS, ("username", "password") if creating else ()):
        return {}, errors
    assert isinstance(data, Mapping)
    clean: dict[str, Any] = {}

    if "username" in data:
        username = data["username"]
        if not isinstance(username, str):
            errors.add("username", "Expected a string")
        elif not _USERNAME.fullmatch(username):
            errors.add(
                "username",
                "Must be 1 to 32 characters of letters, digits, '_', '.' or '-', "
                "not starting with '-'",
            )
        else:
            clean["username"] = username

    if "password" in data:
        password = data["password"]
        if not isinstance(password, str) or not password:
            errors.add("password", "Expected a non-empty string")
        else:
            clean["password"] = password

    if "full_name" in data:
        full_name = data["full_name"]
        if not isinstance(full_name, str):
            errors.add("full_name", "Expected a string")
        else:
            clean["full_name"] = full_name

    if "roles" in data:
        roles = data["roles"]
        if not isinstance(roles, list):
            errors.add("roles", "Expected a list of role names")
        else:
            bad = False
            for index, role in enumerate(roles):
                if not is_role_name(role):
                    errors.add(f"roles.{index}", "Expected a role name such as FULL_ADMIN")
                    bad = True
            if not bad:
                clean["roles"] = list(dict.fromkeys(roles))

    if "locked" in data:
        locked = data["locked"]
        if not isinstance(locked, bool):
            errors.add("locked", "Expected a boolean")
        else:
            clean["locked"] = locked

    return clean, errors


def _username_taken(txn: Cursor, username: str, exclude_id: int | None) -> bool:
    txn.execute("SELECT id FROM users WHERE username = ?", (username,))
    row = txn.fetchone()
    return row is not None and row[0] != exclude_id


_TAKEN = "A user with this username already exists"


def _taken_error() -> ValidationErrors:
    errors = ValidationErrors()
    errors.add("username", _TAKEN, errno.EEXIST)
    return errors


def _not_found(id_: object) -> CallError:
    return CallError(f"User {id_!r} does not exist", errno.ENOENT)


@functools.cache
def _dummy_hash() -> str:
    """
    A hash no password matches, verified in place of an unknown user's.
    """
    return hash_password(secrets.token_urlsafe(32))


#: scrypt takes 16 MiB and a few dozen milliseconds a hash: a burst of logins
#: waits here rather than taking a thread and its memory each.
_hashing = DeferredSemaphore(2)


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _hash_in_thread(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
    """
    Run a password-hashing C{function} in a thread, at most two at once.
    """

    def start() -> Deferred[_T]:
        return deferToThread(function, *args, **kwargs)

    return _hashing.run(start)


def _check_against(password: str, encoded: str | None) -> bool:
    if encoded is None:
        verify_password(password, _dummy_hash())
        return False
    return verify_password(password, encoded)


class UserStore:
    """
    Accounts in the C{users} table of a pool from L{open_database}.

    Call L{setup} once before anything else.
    """

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> Pool:
        """
        The database pool the accounts live in, for stores of what belongs
        to a user (L{midjobs.auth.api_keys.ApiKeyStore}).
        """
        return self._pool

    def setup(self) -> Deferred[int]:
        """
        Create or migrate the C{users} table.
        """
        return ensure_schema(self._pool, "users", USERS_SCHEMA)

    # Reading

    def get(self, id: int) -> Deferred[UserDict]:
        """
        The user with this id; fails with C{CallError(ENOENT)} if there is none.
        """

        def found(rows: list[Row]) -> UserDict:
            if not rows:
                raise _not_found(id)
            return _row_to_user(rows[0])

        d = self._pool.runQuery(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (id,))
        return d.addCallback(found)

    def find(self, id: int) -> Deferred[UserDict | None]:
        """
        The user with this id, or C{None}.
        """
        d = self._pool.runQuery(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (id,))
        return d.addCallback(lambda rows: _row_to_user(rows[0]) if rows else None)

    def get_by_username(self, username: str) -> Deferred[UserDict | None]:
        """
        The user with this username, or C{None}.
        """
        d = self._pool.runQuery(f"SELECT {_COLUMNS} FROM users WHERE username = ?", (username,))
        return d.addCallback(lambda rows: _row_to_user(rows[0]) if rows else None)

    def query(self) -> Deferred[list[UserDict]]:
        """
        All users, by id.
        """
        d = self._pool.runQuery(f"SELECT {_COLUMNS} FROM users ORDER BY id")
        return d.addCallback(lambda rows: [_row_to_user(row) for row in rows])

    def check_password(self, username: str, password: str) -> Deferred[UserDict | None]:
        """
        The user if C{password} is theirs (locked or not), else C{None}.

        An unknown username costs one hash verification like a known one, so
        the time taken does not tell whether the user exists.
        """
        return Deferred.fromCoroutine(self._check_password(username, password))

    async def _check_password(self, username: str, password: str) -> UserDict | None:
        rows = await self._pool.runQuery(
            f"SELECT {_COLUMNS}, password_hash FROM users WHERE username = ?", (username,)
        )
        encoded = rows[0][-1] if rows else None
        matches = await _hash_in_thread(_check_against, password, encoded)
        if not matches:
            return None
        return _row_to_user(rows[0][:-1])

    # Writing

    def create(self, data: Mapping[str, Any]) -> Deferred[UserDict]:
        """
        Add a user; fire with it.  Fails with L{ValidationErrors} for bad data.

        C{username} and C{password} are required; C{full_name} (default empty),
        C{roles} (default none) and C{locked} (default false) are optional.
        """
        return Deferred.fromCoroutine(self._create(data))

    async def _create(self, data: Mapping[str, Any]) -> UserDict:
        clean, errors = _validate(data, creating=True)
        if "username" in clean:
            taken = await self._pool.runInteraction(_username_taken, clean["username"], None)
            if taken:
                errors.add("username", _TAKEN, errno.EEXIST)
        errors.check()

        password_hash = await _hash_in_thread(hash_password, clean["password"])
        id_ = await self._pool.runInteraction(
            self._insert,
            clean["username"],
            clean.get("full_name", ""),
            password_hash,
            json.dumps(clean.get("roles", [])),
            clean.get("locked", False),
        )
        user: UserDict = await self.get(id_)
        return user

    @staticmethod
    def _insert(
        txn: Cursor, username: str, full_name: str, password_hash: str, roles: str, locked: bool
    ) -> int:
        try:
            txn.execute(
                "INSERT INTO users (username, full_name, password_hash, roles, locked, created) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (username, full_name, password_hash, roles, int(locked), time.time()),
            )
        except Conflict:
            raise _taken_error() from None
        row = txn.fetchone()
        assert row is not None  # an INSERT ... RETURNING answers its row
        return int(row[0])

    def update(self, id: int, data: Mapping[str, Any]) -> Deferred[UserDict]:
        """
        Change some fields of a user; fire with the user as it is now.

        Takes the fields of L{create}, all optional; a new password is hashed.
        Fails with C{CallError(ENOENT)} if there is no such user.
        """
        return Deferred.fromCoroutine(self._update(id, data))

    async def _update(self, id: int, data: Mapping[str, Any]) -> UserDict:
        clean, errors = _validate(data, creating=False)
        await self.get(id)
        if "username" in clean:
            taken = await self._pool.runInteraction(_username_taken, clean["username"], id)
            if taken:
                errors.add("username", _TAKEN, errno.EEXIST)
        errors.check()

        columns: dict[str, Any] = {}
        if "password" in clean:
            columns["password_hash"] = await _hash_in_thread(hash_password, clean["password"])
        for key in ("username", "full_name"):
            if key in clean:
                columns[key] = clean[key]
        if "roles" in clean:
            columns["roles"] = json.dumps(clean["roles"])
        if "locked" in clean:
            columns["locked"] = int(clean["locked"])
        if columns:
            await self._pool.runInteraction(self._update_columns, id, columns)
        user: UserDict = await self.get(id)
        return user

    @staticmethod
    def _update_columns(txn: Cursor, id_: int, columns: dict[str, Any]) -> None:
        # Column names come from a fixed list above, never from the caller.
        assignments = ", ".join(f"{name} = ?" for name in columns)
        try:
            txn.execute(f"UPDATE users SET {assignments} WHERE id = ?", (*columns.values(), id_))
        except Conflict:
            raise _taken_error() from None
        if txn.rowcount == 0:
            raise _not_found(id_)

    def delete(self, id: int) -> Deferred[None]:
        """
        Remove a user; fails with C{CallError(ENOENT)} if there is none.

        What refers to the user with C{ON DELETE CASCADE} (their API keys)
        goes with it, in the same statement.
        """

        def delete(txn: Cursor) -> None:
            txn.execute("DELETE FROM users WHERE id = ?", (id,))
            if txn.rowcount == 0:
                raise _not_found(id)

        return self._pool.runInteraction(delete)
