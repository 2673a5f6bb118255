"""
C{user.*}: the daemon's user accounts.
"""

from __future__ import annotations

from typing import Any

from ..query import filter_list
from ..service import Service, read_only, secret


class UserService(Service):
    namespace = "user"

    async def setup(self) -> None:
        await self.middleware.users.setup()

    @secret("data.password")
    async def create(self, data: dict) -> dict:
        """
        Add a user: C{{"username", "password", "full_name", "roles", "locked"}}.
        The password is stored only as a slow salted hash and never returned.
        """
        return await self.middleware.users.create(data)

    @read_only
    async def query(self, filters: list | None = None, options: dict | None = None) -> Any:
        """
        The users, filtered and shaped by C{filters} and C{options}.
        """
        return filter_list(await self.middleware.users.query(), filters, options)

    @secret("data.password")
    async def update(self, id: int, data: dict) -> dict:
        """
        Change the user C{id}; C{data} takes the keys of C{create}, all optional.
        Its logged-in connections get the new name and roles at once, or lose
        their login if it is locked.  A renamed user keeps their jobs and
        tokens (they belong to the id, not the name).
        """
        user = await self.middleware.users.update(id, data)
        self.middleware.user_changed(id, user)
        return user

    async def delete(self, id: int) -> bool:
        """
        Remove the user C{id}.  Its connections lose their login and its
        tokens are revoked at once; its jobs go on, owned by no one that
        remains (a new user of the same name owns none of them).
        """
        await self.middleware.users.delete(id)
        self.middleware.user_changed(id, None)
        return True
