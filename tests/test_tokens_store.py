"""
One contract, two token stores: L{TokenStore} in memory and L{PgTokenStore}
in a database of the private PostgreSQL server.  Every test of the contract
runs against both, on the reactor's clock; then what only the database store
has: the digest in place of the token, uses at the same time from several
connections, the limit held under concurrent creations, the pruning.
"""

from __future__ import annotations

import errno
import hashlib
from typing import Any, AsyncIterator, Sequence

import psycopg
import pytest
import pytest_twisted
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.task import Clock, deferLater
from zope.interface.verify import verifyObject

from midjobs.auth import LOGIN_PASSWORD, TOKEN, UNIX_SOCKET, InvalidToken, ITokenStore, TokenChecker, TokenCredentials, TokenStore, User
from midjobs.auth.pg_tokens import PRUNE_INTERVAL, PgTokenStore, digest_of
from midjobs.auth.tokens import TokenAvatarId, TooManyTokens
from midjobs.counts import NO_COUNTS
from midjobs.store.pg import PgDatabase
from midjobs.store.pg_schema import PARTS, migrate_part

pytest_plugins = ["postgres_server"]

LIMIT = 4

class Counting:
    """
    An L{ICounts} that keeps the limits hit.
    """

    def __init__(self) -> None:
        self.hits: list[str] = []

    def limit_hit(self, limit: str) -> None:
        self.hits.append(limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(NO_COUNTS, name)


@pytest_twisted.async_yield_fixture
async def database(postgres_database: str) -> AsyncIterator[PgDatabase]:
    """
    A database of the private server with the schema a node makes, the
    C{tokens} table of part C{cluster} among it.
    """
    db = PgDatabase(postgres_database, reactor, size=10)
    await db.open()
    for part in PARTS:
        await db.runInteraction(migrate_part, part)
    yield db
    await db.close()


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> ITokenStore:
    if request.param == "memory":
        made: ITokenStore = TokenStore(reactor, max_per_user=LIMIT)
    else:
        made = PgTokenStore(request.getfixturevalue("database"), reactor, max_per_user=LIMIT)
    made.counts = Counting()
    return made


def user(
    user_id: int | None = 1, *, api_key_id: int | None = None, name: str = "alice", roles: Sequence[str] = ()
) -> User:
    kind = UNIX_SOCKET if user_id is None else LOGIN_PASSWORD
    return User(name, frozenset(roles), kind, user_id=user_id, api_key_id=api_key_id)


async def refused(answer: Deferred[Any], error: type[Exception] = InvalidToken) -> str:
    """
    The message C{answer} fails with, an C{error}.
    """
    with pytest.raises(error) as info:
        await answer
    return str(info.value)


# The contract.


def test_both_provide_the_interface(store: ITokenStore) -> None:
    assert verifyObject(ITokenStore, store)


@pytest_twisted.ensureDeferred
async def test_what_a_token_remembers(store: ITokenStore) -> None:
    made = User(
        "alice",
        frozenset({"READONLY_ADMIN", "JOBS_WRITE"}),
        LOGIN_PASSWORD,
        credentials_data={"api_key": "k1"},
        user_id=4,
        api_key_id=9,
    )
    value = await store.create(made, 60, attrs={"page": "index", "n": [1, 2]}, match_origin="10.0.0.1")
    assert isinstance(value, str) and len(value) == 43
    token = await store.lookup(value)
    assert token.value == value and token.user == made
    assert token.attributes == {"page": "index", "n": [1, 2]}
    assert token.origin == "10.0.0.1" and token.job_id is None and not token.single_use
    assert reactor.seconds() + 55 < token.expires <= reactor.seconds() + 60
    assert value not in repr(token)
    peer = await store.lookup(await store.create(user(None, name="root"), 60))
    assert peer.user.user_id is None and peer.user.local_peer


@pytest_twisted.ensureDeferred
async def test_unknown_and_malformed_tokens(store: ITokenStore) -> None:
    for value in ("unknown", "", "x" * 1000, 42):
        assert await store.lookup(value) is None  # type: ignore[arg-type]  # what a client may send
        assert await refused(store.consume(value)) == "Invalid or expired token"  # type: ignore[arg-type]
        assert await store.revoke(value) is False  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.create(user(), 0)


@pytest_twisted.ensureDeferred
async def test_single_use_and_reusable(store: ITokenStore) -> None:
    once = await store.create(user(), 60, single_use=True)
    assert (await store.check(once)).single_use
    assert (await store.consume(once)).single_use
    assert await refused(store.consume(once)) == "Invalid or expired token"
    assert await store.lookup(once) is None
    many = await store.create(user(), 60)
    for _ in range(3):
        assert (await store.consume(many)).user.username == "alice"
    assert await store.lookup(many) is not None


@pytest_twisted.ensureDeferred
async def test_scope_is_checked_and_a_refused_use_uses_nothing(store: ITokenStore) -> None:
    bound = await store.create(user(), 60, single_use=True, job_id=7)
    for job_id in (None, 8):
        assert await refused(store.consume(bound, job_id=job_id)) == "The token is not for this use"
    login = await store.create(user(), 60)
    assert await refused(store.consume(login, job_id=7)) == "The token is not for this use"
    local = await store.create(user(), 60, single_use=True, match_origin="10.0.0.1")
    for origin in ("10.0.0.2", None):
        assert await refused(store.check(local, origin=origin)) == "The token is not valid from this origin"
        assert await refused(store.consume(local, origin=origin)) == "The token is not valid from this origin"
    assert (await store.consume(local, origin="10.0.0.1")).origin == "10.0.0.1"
    assert (await store.consume(bound, job_id=7)).job_id == 7
    assert await refused(store.consume(bound, job_id=7)) == "Invalid or expired token"


@pytest_twisted.ensureDeferred
async def test_revoke(store: ITokenStore) -> None:
    value = await store.create(user(), 60)
    assert await store.revoke(value) is True
    assert await store.revoke(value) is False
    assert await store.lookup(value) is None


@pytest_twisted.ensureDeferred
async def test_revoke_what_derives_from_a_user_or_key(store: ITokenStore) -> None:
    by_password = await store.create(user(1), 100)
    by_key = await store.create(user(1, api_key_id=7), 100)
    single = await store.create(user(1, api_key_id=7), 100, single_use=True, job_id=3)
    other_key = await store.create(user(1, api_key_id=8), 100)
    other_user = await store.create(user(2, api_key_id=9), 100)
    assert await store.revoke_derived(api_key_id=7) == 2
    assert await store.lookup(by_key) is None and await store.lookup(single) is None
    assert await store.lookup(by_password) is not None and await store.lookup(other_key) is not None
    assert await store.revoke_derived(user_id=1) == 2
    assert await store.lookup(by_password) is None and await store.lookup(other_key) is None
    assert await store.lookup(other_user) is not None
    assert await store.count_of(1) == 0 and await store.count_of(2) == 1
    with pytest.raises(ValueError):
        store.revoke_derived()
    with pytest.raises(ValueError):
        store.revoke_derived(user_id=1, api_key_id=7)


@pytest_twisted.ensureDeferred
async def test_live_tokens_per_identity_are_limited(store: ITokenStore) -> None:
    made = [await store.create(user(1), 60, single_use=bool(i % 2)) for i in range(LIMIT)]
    assert await store.count_of(1) == LIMIT
    message = await refused(store.create(user(1), 60), TooManyTokens)
    assert f"a user may hold {LIMIT}" in message
    with pytest.raises(TooManyTokens) as info:
        await store.create(user(1, api_key_id=5), 60)
    assert info.value.errno == errno.EBUSY
    assert store.counts.hits == ["tokens_per_user", "tokens_per_user"]
    # Nothing was evicted; other identities, the local peer among them, count apart.
    assert None not in [await store.lookup(value) for value in made]
    for identity in (2, None):
        for _ in range(LIMIT):
            await store.create(user(identity), 60)
        await refused(store.create(user(identity), 60), TooManyTokens)
    assert await store.count_of(None) == LIMIT
    # A used single-use token and a revoked one make room.
    await store.consume(made[1])
    await store.revoke(made[0])
    assert await store.count_of(1) == LIMIT - 2
    await store.create(user(1), 60)
    await store.create(user(1), 60)
    await refused(store.create(user(1), 60), TooManyTokens)


@pytest_twisted.ensureDeferred
async def test_expiry(store: ITokenStore) -> None:
    short = await store.create(user(1), 0.3)
    long = await store.create(user(1), 60)
    assert await store.count_of(1) == 2
    deadline = reactor.seconds() + 10
    while await store.lookup(short) is not None:
        assert reactor.seconds() < deadline, "the token never expired"
        await deferLater(reactor, 0.05, lambda: None)
    assert await refused(store.consume(short)) == "Invalid or expired token"
    assert await store.count_of(1) == 1
    assert await store.lookup(long) is not None
    # An expired token leaves room for another.
    for _ in range(LIMIT - 1):
        await store.create(user(1), 60)


@pytest_twisted.ensureDeferred
async def test_token_checker_uses_the_store(store: ITokenStore) -> None:
    checker = TokenChecker(store)
    token = await store.create(user(3, name="bob", api_key_id=4), 60, single_use=True, job_id=11)
    with pytest.raises(UnauthorizedLogin):
        await checker.requestAvatarId(TokenCredentials(token))
    avatar_id = await checker.requestAvatarId(TokenCredentials(token, job_id=11))
    assert avatar_id == TokenAvatarId("bob", TOKEN, trusted_peer=False, user_id=3, api_key_id=4)
    with pytest.raises(UnauthorizedLogin):
        await checker.requestAvatarId(TokenCredentials(token, job_id=11))
    root = await store.create(user(None, name="root"), 60)
    assert (await checker.requestAvatarId(TokenCredentials(root))).trusted_peer


# What only the database store has.


@pytest_twisted.ensureDeferred
async def test_only_the_digest_is_stored(database: PgDatabase) -> None:
    store = PgTokenStore(database, reactor)
    value = await store.create(user(1), 60, attrs={"a": 1}, job_id=5, single_use=True)
    rows = await database.runQuery("SELECT digest, kind, user_id, job_id, data FROM tokens")
    assert len(rows) == 1
    digest, kind, user_id, job_id, data = rows[0]
    assert bytes(digest) == digest_of(value) == hashlib.sha256(value.encode()).digest()
    assert (kind, user_id, job_id) == ("SINGLE_USE", 1, 5)
    assert value not in data


@pytest_twisted.ensureDeferred
async def test_a_single_use_token_is_used_once_among_many_at_once(database: PgDatabase) -> None:
    # Several stores on one database, as the nodes of a cluster.
    stores = [PgTokenStore(database, reactor) for _ in range(4)]
    for _ in range(3):
        value = await stores[0].create(user(1), 60, single_use=True, job_id=2)
        uses = [store.consume(value, job_id=2) for store in stores for _ in range(2)]
        results = await DeferredList(uses, consumeErrors=True)
        succeeded = [result for ok, result in results if ok]
        failed = [result for ok, result in results if not ok]
        assert len(succeeded) == 1 and succeeded[0].job_id == 2
        assert all(failure.check(InvalidToken) for failure in failed)


@pytest_twisted.ensureDeferred
async def test_the_limit_holds_for_creations_at_once(database: PgDatabase) -> None:
    stores = [PgTokenStore(database, reactor, max_per_user=LIMIT) for _ in range(4)]
    # Hold the identity's lock, so that every creation is in its transaction
    # at once, waiting on it: then they count one after the other.
    with psycopg.connect(database.conninfo) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(hashtextextended('midjobs.tokens.1', 0))")
        made = [store.create(user(1), 60) for store in stores for _ in range(2)]
        deadline = reactor.seconds() + 10
        while await waiting_on_advisory_locks(database) < len(made):
            assert reactor.seconds() < deadline, "the creations never waited on the identity's lock"
            await deferLater(reactor, 0.01, lambda: None)
        holder.rollback()
        results = await DeferredList(made, consumeErrors=True)
    assert sum(1 for ok, _ in results if ok) == LIMIT
    assert all(result.check(TooManyTokens) for ok, result in results if not ok)
    assert await stores[0].count_of(1) == LIMIT


async def waiting_on_advisory_locks(database: PgDatabase) -> int:
    rows = await database.runQuery(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
    )
    return int(rows[0][0])


@pytest_twisted.ensureDeferred
async def test_expired_rows_are_pruned_every_minute(database: PgDatabase) -> None:
    clock = Clock()
    store = PgTokenStore(database, clock)
    await gatherResults([store.create(user(1), 0.05), store.create(user(2), 0.05)])
    kept = await store.create(user(3), 600)
    store.startService()
    try:
        deadline = reactor.seconds() + 10
        while await store.count_of(1) or await store.count_of(2):
            assert reactor.seconds() < deadline, "the tokens never expired"
            await deferLater(reactor, 0.02, lambda: None)
        # Expired, but not deleted before the minute is up.
        assert len(await database.runQuery("SELECT digest FROM tokens")) == 3
        clock.advance(PRUNE_INTERVAL)
        deadline = reactor.seconds() + 10
        while len(await database.runQuery("SELECT digest FROM tokens")) != 1:
            assert reactor.seconds() < deadline, "the expired rows were never pruned"
            await deferLater(reactor, 0.02, lambda: None)
    finally:
        store.stopService()
    assert await store.lookup(kept) is not None
    assert clock.getDelayedCalls() == []
