"""
Web sessions: what keeps the task manager's page logged in across reloads,
new tabs and restarts of the daemon, without the browser keeping a password.

A login through C{POST /_session} (L{midjobs.http._web_session}) makes a
session: a random secret that goes to the browser once, in an C{HttpOnly}
cookie, and a row of the C{web_sessions} table that keeps only the secret's
SHA-256 digest (the secret is high-entropy: a fast digest is enough), the
stored user's id, and the API key's if the login was by key.  The page
trades the cookie for a short-lived token to log its WebSocket in.

The table is in the daemon's database, so sessions outlive a restart, and on
PostgreSQL every node of a cluster shares them.  A session ends at its
logout, after C{lifetime} seconds whatever its use, or after C{idle_timeout}
seconds without use: a trade of its cookie, or a live connection that logged
in through it (L{WebSessionKeepAlive}).  Deleting its user or its API key deletes it
(C{ON DELETE CASCADE}); locking the user ends it too
(L{WebSessionStore.end_of_user}).  One user holds at most
L{MAX_SESSIONS_PER_USER}: a new login past that ends the least recently used.

A session's row id is its stable id (never reused, never secret): the
tokens traded for its cookie carry it, and so do the logins made with them
(L{midjobs.auth.interfaces.IUser.web_session_id}).  The store tells whoever
made it (C{ended}) the ids of the sessions it ends: at a logout, when it
finds one past its time (at its use, or when a login prunes them), when a
login evicts one, when a user is locked.  Nothing is scheduled: a session
past its time ends when it is noticed.  The sessions that go with their
user's or API key's row are not told: the logins of that user or key end
with them anyway.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Callable, Collection, Final, Iterable, Iterator, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from midjobs.auth.api_keys import API_KEYS_SCHEMA
from midjobs.auth.users import USERS_SCHEMA
from midjobs.logs import logger
from midjobs.store.database import Cursor, Pool, ensure_schema

__all__ = [
    "MAX_SESSIONS_PER_USER",
    "WEB_SESSIONS_SCHEMA",
    "WebSession",
    "WebSessionKeepAlive",
    "WebSessionStore",
]

log = logger(__name__)

#: Live sessions one user may hold; a login past that ends the least recently used.
MAX_SESSIONS_PER_USER: Final = 100

#: Random bytes in a session's secret: 32 bytes are 43 URL-safe characters.
SECRET_BYTES: Final = 32

#: Longest secret accepted from a cookie (anything longer is no secret of ours).
_MAX_SECRET = 128

#: Session ids in one statement (L{WebSessionStore.keep_alive}, L{WebSessionStore.live}).
_IDS_AT_ONCE = 500

#: How many times per idle timeout L{WebSessionKeepAlive} tells of the sessions in use.
KEEP_ALIVES_PER_IDLE_TIMEOUT: Final = 4

#: The schema history of the C{web_sessions} part (see L{ensure_schema}).
#: A session goes with its user and with the API key it came from.
WEB_SESSIONS_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS web_sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        secret_hash TEXT UNIQUE NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        api_key_id INTEGER REFERENCES api_keys (id) ON DELETE CASCADE,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        last_used REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions (user_id, last_used)",
)


@attrs.frozen
class WebSession:
    """
    A live session, as L{WebSessionStore.use} finds it.

    @ivar id: its row's id (never the secret).
    @ivar user_id: the stored user it logs in.
    @ivar api_key_id: the API key its login used, or L{None} for a password.
    @ivar expires: when it ends whatever its use (seconds since the epoch).
    """

    id: int
    user_id: int
    api_key_id: int | None
    expires: float


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class WebSessionStore:
    """
    The web sessions in the C{web_sessions} table of C{pool} (the user
    store's: the table refers to C{users} and C{api_keys}).  The schema is
    made or migrated on first use.

    @ivar clock: whose C{seconds()} sessions expire by (the reactor).
    @ivar lifetime: seconds a session lives from its login, whatever its use
        (C{[auth] session_lifetime}).
    @ivar idle_timeout: seconds a session lives without use
        (C{[auth] session_idle_timeout}).
    """

    def __init__(
        self,
        pool: Pool,
        clock: IReactorTime,
        *,
        lifetime: float,
        idle_timeout: float,
        ended: Callable[[Sequence[int]], object] = lambda ids: None,
    ) -> None:
        """
        @param ended: called with the ids of the sessions this store ended,
            once their rows are gone (see the module docstring).
        """
        self._pool = pool
        self.clock = clock
        self.lifetime = lifetime
        self.idle_timeout = idle_timeout
        self._ended = ended
        self._ready: Deferred[None] | None = None

    async def _setup(self) -> None:
        if self._ready is None:
            self._ready = Deferred.fromCoroutine(self._ensure_schema())
        ready = self._ready
        try:
            await ready
        except BaseException:
            # Tried again at the next use (the database may be back).
            if self._ready is ready:
                self._ready = None
            raise

    async def _ensure_schema(self) -> None:
        # The tables the sessions refer to come first (both are idempotent).
        await ensure_schema(self._pool, "users", USERS_SCHEMA)
        await ensure_schema(self._pool, "api_keys", API_KEYS_SCHEMA)
        await ensure_schema(self._pool, "web_sessions", WEB_SESSIONS_SCHEMA)

    async def create(self, user_id: int, api_key_id: int | None = None) -> str:
        """
        Start a session for the stored user C{user_id} (logged in with the
        API key C{api_key_id}, if given); return its secret, which is kept
        nowhere here.  Sessions past their time are pruned meanwhile.
        """
        await self._setup()
        secret = secrets.token_urlsafe(SECRET_BYTES)
        now = self.clock.seconds()
        self._tell(await self._pool.runInteraction(self._insert, _digest(secret), user_id, api_key_id, now))
        return secret

    def _insert(self, txn: Cursor, digest: str, user_id: int, api_key_id: int | None, now: float) -> list[int]:
        """
        Add the session; the ids of those it ended: past their time, or
        the user's least recently used past L{MAX_SESSIONS_PER_USER}.
        """
        txn.execute(
            "DELETE FROM web_sessions WHERE expires <= ? OR last_used <= ? RETURNING id",
            (now, now - self.idle_timeout),
        )
        ended = _ids(txn)
        txn.execute(
            "INSERT INTO web_sessions (secret_hash, user_id, api_key_id, created, expires, last_used) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (digest, user_id, api_key_id, now, now + self.lifetime, now),
        )
        txn.execute(
            "DELETE FROM web_sessions WHERE user_id = ? AND id NOT IN "
            "(SELECT id FROM web_sessions WHERE user_id = ? ORDER BY last_used DESC, id DESC LIMIT ?) RETURNING id",
            (user_id, user_id, MAX_SESSIONS_PER_USER),
        )
        return ended + _ids(txn)

    async def use(self, secret: str) -> WebSession | None:
        """
        The live session whose secret is C{secret}, now used (its idle time
        starts again), or L{None} if there is none: never was, ended, or
        past its time (then it is deleted).
        """
        if not secret or len(secret) > _MAX_SECRET:
            return None
        await self._setup()
        session, ended = await self._pool.runInteraction(self._use, _digest(secret), self.clock.seconds())
        self._tell(ended)
        return session

    def _use(self, txn: Cursor, digest: str, now: float) -> tuple[WebSession | None, list[int]]:
        """
        The live session of C{digest}, now used, or L{None}; and the id of
        the one found past its time, if it was.
        """
        txn.execute(
            "SELECT id, user_id, api_key_id, expires, last_used FROM web_sessions WHERE secret_hash = ?", (digest,)
        )
        row = txn.fetchone()
        if row is None:
            return None, []
        id_, user_id, api_key_id, expires, last_used = row
        if now >= expires or now - last_used >= self.idle_timeout:
            txn.execute("DELETE FROM web_sessions WHERE id = ? RETURNING id", (id_,))
            return None, _ids(txn)
        txn.execute("UPDATE web_sessions SET last_used = ? WHERE id = ?", (now, id_))
        session = WebSession(int(id_), int(user_id), None if api_key_id is None else int(api_key_id), float(expires))
        return session, []

    async def keep_alive(self, ids: Collection[int]) -> None:
        """
        The sessions C{ids} are in use by live connections that logged in
        through them: their idle time starts again.  One past its time
        stays so (it ends when that is noticed).
        """
        if not ids:
            return
        await self._setup()
        await self._pool.runInteraction(self._touch, sorted(ids), self.clock.seconds())

    def _touch(self, txn: Cursor, ids: list[int], now: float) -> None:
        for chunk, marks in _in_chunks(ids):
            txn.execute(
                f"UPDATE web_sessions SET last_used = ? WHERE id IN ({marks}) AND expires > ? AND last_used > ?",
                (now, *chunk, now, now - self.idle_timeout),
            )

    async def live(self, ids: Collection[int]) -> set[int]:
        """
        Those of the sessions C{ids} that have not ended: still stored, and
        not past their time.
        """
        if not ids:
            return set()
        await self._setup()
        live: set[int] = await self._pool.runInteraction(self._live, sorted(ids), self.clock.seconds())
        return live

    def _live(self, txn: Cursor, ids: list[int], now: float) -> set[int]:
        live: set[int] = set()
        for chunk, marks in _in_chunks(ids):
            txn.execute(
                f"SELECT id FROM web_sessions WHERE id IN ({marks}) AND expires > ? AND last_used > ?",
                (*chunk, now, now - self.idle_timeout),
            )
            live.update(_ids(txn))
        return live

    async def end(self, secret: str) -> bool:
        """
        End the session whose secret is C{secret}; whether there was one.
        """
        if not secret or len(secret) > _MAX_SECRET:
            return False
        await self._setup()
        return bool(self._tell(await self._pool.runInteraction(self._delete, "secret_hash", _digest(secret))))

    async def end_of_user(self, user_id: int) -> int:
        """
        End every session of the stored user C{user_id}; how many there were.
        """
        await self._setup()
        return len(self._tell(await self._pool.runInteraction(self._delete, "user_id", user_id)))

    @staticmethod
    def _delete(txn: Cursor, column: str, value: object) -> list[int]:
        txn.execute(f"DELETE FROM web_sessions WHERE {column} = ? RETURNING id", (value,))
        return _ids(txn)

    def _tell(self, ended: list[int]) -> list[int]:
        """
        Tell of the sessions C{ended}, if any; return them.
        """
        if ended:
            self._ended(ended)
        return ended


def _in_chunks(ids: list[int]) -> Iterator[tuple[list[int], str]]:
    """
    C{ids} in chunks of at most L{_IDS_AT_ONCE}, each with its C{?} marks.
    """
    for start in range(0, len(ids), _IDS_AT_ONCE):
        chunk = ids[start : start + _IDS_AT_ONCE]
        yield chunk, ", ".join("?" * len(chunk))


def _ids(txn: Cursor) -> list[int]:
    """
    The ids a C{... RETURNING id} just answered.
    """
    return [int(id_) for (id_,) in txn.fetchall()]


class WebSessionKeepAlive:
    """
    Keeps the sessions a daemon's live connections logged in through from
    going idle: a tab that stays open uses its session, though it trades
    the cookie only when it connects.  L{KEEP_ALIVES_PER_IDLE_TIMEOUT} times
    per idle timeout, it tells the store the sessions in use
    (L{WebSessionStore.keep_alive}); each node of a cluster tells of its own.
    A failure is logged, and the next time tells again.
    """

    def __init__(self, store: WebSessionStore, in_use: Callable[[], Iterable[int]], clock: IReactorTime) -> None:
        """
        @param in_use: the ids of the sessions this daemon's live connections
            logged in through (L{midjobs.auth.interfaces.IUser.web_session_id}).
        @param clock: what the loop runs by (the reactor).
        """
        self._store = store
        self._in_use = in_use
        self._loop = LoopingCall(self.tell)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(self._store.idle_timeout / KEEP_ALIVES_PER_IDLE_TIMEOUT, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def tell(self) -> Deferred[None]:
        """
        Tell the store of the sessions in use now; fires when it knows.
        """
        ids = set(self._in_use())

        def failed(failure: Failure) -> None:
            log.warn("Could not keep {count} web sessions in use alive: {error}", count=len(ids),
                     error=failure.getErrorMessage())  # fmt: skip

        return Deferred.fromCoroutine(self._store.keep_alive(ids)).addErrback(failed)
