"""
C{user.*}: the daemon's user accounts.
"""

from __future__ import annotations

from typing import Any

from ..query import filter_list
from ..service import Service


class UserService(Service):
    namespace = "user"

    async def setup(self) -> None:
        await self.middleware.users.setup()

    async def create(self, data: dict) -> dict:
        """
        Add a user: C{{"username", "password", "full_name", "roles", "locked"}}.
        The password is stored only as a slow salted hash and never returned.
        """
        return await self.middleware.users.create(data)

    async def query(self, filters: list | None = None, options: dict | None = None) -> Any:
        """
        The users, filtered and shaped by C{filters} and C{options}.
        """
        return filter_list(await self.middleware.users.query(), filters, options)

    async def update(self, id: int, data: dict) -> dict:
        """
        Change the user C{id}; C{data} takes the keys of C{create}, all optional.
        """
        return await self.middleware.users.update(id, data)

    async def delete(self, id: int) -> bool:
        """
        Remove the user C{id}.
        """
        await self.middleware.users.delete(id)
        return True
