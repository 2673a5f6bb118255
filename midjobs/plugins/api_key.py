"""
C{api_key.*}: the API keys that log programs in as a user.
"""

from __future__ import annotations

import errno
from typing import Any

from ..auth import ApiKeyStore, api_key_store_of
from ..auth.api_keys import ApiKeyDict
from ..errors import CallError
from ..query import filter_list
from ..service import Service, read_only, secret_result


class ApiKeyService(Service):
    namespace = "api_key"

    @property
    def _store(self) -> ApiKeyStore:
        store = api_key_store_of(self.middleware.portal)
        if store is None:
            raise CallError("This daemon's portal takes no API keys", errno.ENOTSUP)
        return store

    async def setup(self) -> None:
        store = api_key_store_of(self.middleware.portal)
        if store is not None:
            await store.setup()

    @secret_result("key")
    async def create(self, data: dict[str, Any]) -> ApiKeyDict:
        """
        Make an API key for a user: C{{"name": ..., "username": ...}}.

        Returns C{{"id", "name", "username", "created_at", "key"}}.  This is the
        only time the key is shown: the daemon keeps only a digest of it.
        """
        return await self._store.create(data)

    @read_only
    async def query(self, filters: list[Any] | None = None, options: dict[str, Any] | None = None) -> Any:
        """
        The API keys (C{id}, C{name}, C{username}, C{created_at}, never the
        key), filtered and shaped by C{filters} and C{options}.
        """
        return filter_list(await self._store.query(), filters, options)

    async def delete(self, id: int) -> bool:
        """
        Remove the API key C{id}: it logs nobody in from now on, the tokens
        made from it (directly or through other tokens) are revoked, and the
        connections logged in with it or with those tokens are logged out at once.
        """
        await self._store.delete(id)
        await self.middleware.api_key_deleted(id)
        return True
