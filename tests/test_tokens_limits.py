"""
Tokens are bounded (issue 11, finding 7): the attributes of one token
(C{[limits] token_attrs} bytes of JSON) and the live tokens of one user
(C{[limits] tokens_per_user}); past either the call fails clearly, a log line
names the user and the address, and nothing else changes.  Expired tokens are
pruned, and a store forgets everything derived from a deleted user or key.
"""

from __future__ import annotations

import errno

from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.task import Clock

from conftest import RunningDaemon
from midjobs.auth import LOGIN_PASSWORD, UNIX_SOCKET, TokenStore, User
from midjobs.auth.tokens import TooManyTokens
from midjobs.client import Client, ClientCallError, ClientValidationErrors
from midjobs.config import Settings
from midjobs import wire_json

from test_download import now
from test_identities import create_user, log_in

MAX_TOKENS = 3
MAX_ATTRS = 100


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return attrs.evolve(settings, max_tokens_per_user=MAX_TOKENS, max_token_attrs=MAX_ATTRS)





def attrs_of_size(size: int) -> dict[str, str]:
    """
    Attributes whose JSON is C{size} bytes.
    """
    overhead = len(wire_json.dumps({"a": ""}))
    return {"a": "x" * (size - overhead)}


def log_lines(events: list[dict[str, Any]], word: str) -> list[dict[str, Any]]:
    return [e for e in events if word in e.get("log_format", "")]


@pytest_twisted.ensureDeferred
async def test_token_attributes_are_bounded(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client], log_events: list[dict[str, Any]]
) -> None:
    await create_user(admin_client, "bob")
    bob = await log_in(daemon, connections, "bob")
    token = await bob.call("auth.generate_token", 60, attrs_of_size(MAX_ATTRS))
    assert (await daemon.middleware.tokens.lookup(token)).attributes == attrs_of_size(MAX_ATTRS)
    with pytest.raises(ClientValidationErrors) as info:
        await bob.call("auth.generate_token", 60, attrs_of_size(MAX_ATTRS + 1))
    assert [(e.attribute, e.errno) for e in info.value.errors] == [("generate_token.attrs", errno.EINVAL)]
    assert f"{MAX_ATTRS} bytes" in info.value.errors[0].errmsg
    assert len(daemon.middleware.tokens) == 1
    refusal = log_lines(log_events, "token attributes")
    assert refusal and refusal[-1]["username"] == "bob" and "127.0.0.1" in str(refusal[-1]["peer"])


@pytest_twisted.ensureDeferred
async def test_tokens_per_user_are_bounded(
    daemon: RunningDaemon, admin_client: Client, connections: list[Client], log_events: list[dict[str, Any]]
) -> None:
    await create_user(admin_client, "bob")
    await create_user(admin_client, "carol")
    bob = await log_in(daemon, connections, "bob")
    made = [await bob.call("auth.generate_token", 60) for _ in range(MAX_TOKENS)]
    # Another session of the same user counts against the same limit.
    other = await log_in(daemon, connections, "bob")
    with pytest.raises(ClientCallError) as info:
        await other.call("auth.generate_token", 60)
    assert info.value.errno == errno.EBUSY
    assert f"{MAX_TOKENS}" in info.value.reason
    refusal = log_lines(log_events, "tokens")
    assert refusal and refusal[-1]["username"] == "bob" and "127.0.0.1" in str(refusal[-1]["peer"])
    # Nothing was evicted, and other users are not affected.
    tokens = daemon.middleware.tokens
    assert None not in [await tokens.lookup(token) for token in made]
    carol = await log_in(daemon, connections, "carol")
    assert await carol.call("auth.generate_token", 60)
    # Logging out revokes bob's tokens, which frees room for new ones.
    await bob.call("auth.logout")
    assert await other.call("auth.generate_token", 60)


# The store on its own.


def user(user_id: int | None, *, api_key_id: int | None = None) -> User:
    kind = UNIX_SOCKET if user_id is None else LOGIN_PASSWORD
    return User(f"u{user_id}", frozenset(), kind, user_id=user_id, api_key_id=api_key_id)


def test_store_limits_live_tokens_per_identity_and_prunes_expired_ones() -> None:
    clock = Clock()
    store = TokenStore(clock, max_per_user=2)
    first = now(store.create(user(1), 10))
    now(store.create(user(1), 100))
    with pytest.raises(TooManyTokens) as info:
        now(store.create(user(1), 100))
    assert info.value.errno == errno.EBUSY
    # Other identities, the local peer among them, have their own count.
    now(store.create(user(2), 100))
    now(store.create(user(None), 100))
    now(store.create(user(None), 100))
    with pytest.raises(TooManyTokens):
        now(store.create(user(None), 100))
    clock.advance(10)
    assert now(store.lookup(first)) is None
    now(store.create(user(1), 100))
    assert len(store) == 5
    clock.advance(100)
    assert len(store) == 0 and now(store.count_of(1)) == 0


def test_store_revokes_what_derives_from_a_user_or_key() -> None:
    store = TokenStore(Clock())
    by_password = now(store.create(user(1), 100))
    by_key = now(store.create(user(1, api_key_id=7), 100))
    single = now(store.create(user(1, api_key_id=7), 100, single_use=True, job_id=3))
    other_key = now(store.create(user(1, api_key_id=8), 100))
    other_user = now(store.create(user(2, api_key_id=9), 100))
    assert now(store.revoke_derived(api_key_id=7)) == 2
    assert now(store.lookup(by_key)) is None and now(store.lookup(single)) is None
    assert now(store.lookup(by_password)) is not None and now(store.lookup(other_key)) is not None
    assert now(store.revoke_derived(user_id=1)) == 2
    assert now(store.lookup(by_password)) is None and now(store.lookup(other_key)) is None
    assert now(store.lookup(other_user)) is not None
    assert now(store.count_of(1)) == 0 and now(store.count_of(2)) == 1
    with pytest.raises(ValueError):
        store.revoke_derived()
