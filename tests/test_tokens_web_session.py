"""
A token traded for a web session's cookie remembers that session's id
through every store, logs in with it, and goes at the session's end:
L{ITokenStore.revoke_derived} with C{web_session_id}, against both stores
of L{test_tokens_store}.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from midjobs.auth import LOGIN_PASSWORD, TOKEN, ITokenStore, TokenChecker, TokenCredentials, User
from midjobs.auth.tokens import TokenAvatarId

from test_tokens_store import database, store  # noqa: F401 (fixtures)

pytest_plugins = ["postgres_server"]


def of_session(web_session_id: int | None, *, user_id: int = 1, api_key_id: int | None = None) -> User:
    return User("alice", frozenset(), LOGIN_PASSWORD, user_id=user_id, api_key_id=api_key_id,
                web_session_id=web_session_id)  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_a_token_remembers_its_web_session(store: ITokenStore) -> None:  # noqa: F811
    made = of_session(5, api_key_id=9)
    token = await store.lookup(await store.create(made, 60))
    assert token is not None and token.user == made and token.user.web_session_id == 5
    single = await store.create(made, 60, single_use=True)
    avatar_id = await TokenChecker(store).requestAvatarId(TokenCredentials(single))
    assert avatar_id == TokenAvatarId("alice", TOKEN, user_id=1, api_key_id=9, web_session_id=5)


@pytest_twisted.ensureDeferred
async def test_revoke_what_derives_from_a_web_session(store: ITokenStore) -> None:  # noqa: F811
    of_five = [await store.create(of_session(5), 100), await store.create(of_session(5), 100, single_use=True)]
    of_six = await store.create(of_session(6), 100)
    by_password = await store.create(of_session(None), 100)
    assert await store.revoke_derived(web_session_id=5) == 2
    assert [await store.lookup(value) for value in of_five] == [None, None]
    assert await store.lookup(of_six) is not None and await store.lookup(by_password) is not None
    assert await store.revoke_derived(web_session_id=5) == 0
    with pytest.raises(ValueError):
        store.revoke_derived(user_id=1, web_session_id=6)
