"""
C{user.*}: the daemon's user accounts.
"""

from __future__ import annotations

import errno
from typing import Any

from ..auth.users import UserDict, UserStore
from ..errors import CallError
from ..query import filter_list
from ..service import Service, read_only, secret


class UserService(Service):
    namespace = "user"

    @property
    def _users(self) -> UserStore:
        users = self.middleware.users
        if users is None:
            raise CallError("This daemon has no user store", errno.ENOTSUP)
        return users

    async def setup(self) -> None:
        await self._users.setup()

    @secret("data.password")
    async def create(self, data: dict[str, Any]) -> UserDict:
        """
        Add a user: C{{"username", "password", "full_name", "roles", "locked"}}.
        The password is stored only as a slow salted hash and never returned.
        """
        return await self._users.create(data)

    @read_only
    async def query(self, filters: list[Any] | None = None, options: dict[str, Any] | None = None) -> Any:
        """
        The users, filtered and shaped by C{filters} and C{options}.
        """
        return filter_list(await self._users.query(), filters, options)

    @secret("data.password")
    async def update(self, id: int, data: dict[str, Any]) -> UserDict:
        """
        Change the user C{id}; C{data} takes the keys of C{create}, all optional.
        Its logged-in connections get the new name and roles at once, or lose
        their login if it is locked.  A renamed user keeps their jobs and
        tokens (they belong to the id, not the name).
        """
        user = await self._users.update(id, data)
        await self.middleware.user_changed(id, user)
        return user

    async def delete(self, id: int) -> bool:
        """
        Remove the user C{id}.  Its connections lose their login and its
        tokens are revoked at once; its jobs go on, owned by no one that
        remains (a new user of the same name owns none of them).
        """
        await self._users.delete(id)
        await self.middleware.user_changed(id, None)
        return True
