"""
The value types of a login: the avatar id a checker hands the realm, and the
avatar (L{User}) the realm hands back.
"""

from __future__ import annotations

import copy
from typing import Any, Final, Mapping

import attrs
from zope.interface import implementer

from midjobs.auth.interfaces import IUser
from midjobs.auth.roles import FULL_ADMIN

__all__ = ["LOGIN_PASSWORD", "UNIX_SOCKET", "AvatarId", "User"]

#: Logged in with a username and password.
LOGIN_PASSWORD: Final = "LOGIN_PASSWORD"
#: A trusted peer on the UNIX socket, with no login.
UNIX_SOCKET: Final = "UNIX_SOCKET"


@attrs.frozen
class AvatarId:
    """
    What a checker vouches for: a username and the kind of login that proved it.

    The realm reads C{credentials_type} to know where the user's roles come
    from (the user store, or the fixed rights of a trusted peer), and hands
    C{credentials_data} on to the L{User}.

    @ivar credentials_data: more about the login for the job record
        (L{User.to_credentials}), such as which API key was used; never a secret.
    """

    username: str
    credentials_type: str
    credentials_data: Mapping[str, Any] = attrs.field(factory=dict, hash=False, kw_only=True)


@implementer(IUser)
@attrs.frozen
class User:
    """
    The avatar: who is calling, with which roles, by which kind of login.

    @ivar credentials_data: what L{to_credentials} tells besides the username
        (see L{AvatarId.credentials_data}).
    """

    username: str
    roles: frozenset[str] = attrs.field(converter=frozenset)
    credentials_type: str
    credentials_data: Mapping[str, Any] = attrs.field(factory=dict, hash=False, kw_only=True)

    @property
    def is_full_admin(self) -> bool:
        return FULL_ADMIN in self.roles

    def has_role(self, role: str) -> bool:
        return role in self.roles or self.is_full_admin

    def to_credentials(self) -> dict[str, object]:
        data: dict[str, object] = {"username": self.username}
        for key, value in self.credentials_data.items():
            if key != "username":
                data[key] = copy.deepcopy(value)
        return {"type": self.credentials_type, "data": data}
