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
        Its logged-in connections get the new roles at once, or lose their
        login if it is locked or renamed.
        """
        before = await self.middleware.users.get(id)
        user = await self.middleware.users.update(id, data)
        if user["username"] != before["username"]:
            self.middleware.user_changed(before["username"], None)
        self.middleware.user_changed(user["username"], None if user["locked"] else user["roles"])
        return user

    async def delete(self, id: int) -> bool:
        """
        Remove the user C{id}.  Its connections lose their login at once;
        its jobs go on.
        """
        user = await self.middleware.users.get(id)
        await self.middleware.users.delete(id)
        self.middleware.user_changed(user["username"], None)
        return True
