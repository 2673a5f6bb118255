"""
The value types of a login: the avatar id a checker hands the realm, and the
avatar (L{User}) the realm hands back.
"""

from __future__ import annotations

import copy
from typing import Any, Final, Iterable, Mapping

import attrs
from zope.interface import implementer

from midjobs.auth.interfaces import IUser
from midjobs.auth.roles import FULL_ADMIN

__all__ = ["LOGIN_PASSWORD", "UNIX_SOCKET", "AvatarId", "User"]

#: Logged in with a username and password.
LOGIN_PASSWORD: Final = "LOGIN_PASSWORD"
#: A trusted peer on the UNIX socket, with no login.
UNIX_SOCKET: Final = "UNIX_SOCKET"


def _roles(roles: Iterable[str]) -> frozenset[str]:
    return frozenset(roles)


@attrs.frozen
class AvatarId:
    """
    What a checker vouches for: a user and the kind of login that proved it.

    The realm reads C{credentials_type} to know where the user's roles come
    from (the user store, or the fixed rights of a trusted peer), finds the
    stored user by C{user_id}, and hands C{credentials_data} on to the L{User}.

    @ivar user_id: the stored user's id (the C{users} table's, never reused),
        or L{None} for the trusted local peer, or a checker that knows only a
        name (see L{midjobs.auth.realm.Realm}).
    @ivar api_key_id: the API key the login comes from (directly, or through
        tokens made from it), or L{None}.
    @ivar web_session_id: the web session the login comes from (through
        tokens traded for its cookie, or made from such a login), or L{None}.
    @ivar credentials_data: more about the login for the job record
        (L{User.to_credentials}), such as which API key was used; never a secret.
    """

    username: str
    credentials_type: str
    credentials_data: Mapping[str, Any] = attrs.field(factory=dict, hash=False, kw_only=True)
    user_id: int | None = attrs.field(default=None, kw_only=True)
    api_key_id: int | None = attrs.field(default=None, kw_only=True)
    web_session_id: int | None = attrs.field(default=None, kw_only=True)


@implementer(IUser)
@attrs.frozen
class User:
    """
    The avatar: who is calling, with which roles, by which kind of login.

    Ownership (of jobs, tokens) goes by C{user_id}, never by C{username}: a
    name may be renamed away and given to someone else, an id never is.

    @ivar credentials_data: what L{to_credentials} tells besides the username
        and the user id (see L{AvatarId.credentials_data}).
    @ivar user_id: the stored user's id, or L{None} for the trusted local
        peer (an identity of its own: it owns no stored user's jobs, and no
        stored user owns its jobs, whatever their names).
    @ivar api_key_id: the API key the login comes from (see L{AvatarId}).
    @ivar web_session_id: the web session the login comes from (see L{AvatarId}).
    @ivar local_peer: the user is the trusted local peer (a UNIX-socket login,
        or a token one made), whose rights come from the socket, not the store.
    """

    username: str
    roles: frozenset[str] = attrs.field(converter=_roles)
    credentials_type: str
    credentials_data: Mapping[str, Any] = attrs.field(factory=dict, hash=False, kw_only=True)
    user_id: int | None = attrs.field(default=None, kw_only=True)
    api_key_id: int | None = attrs.field(default=None, kw_only=True)
    web_session_id: int | None = attrs.field(default=None, kw_only=True)
    local_peer: bool = attrs.field(
        default=attrs.Factory(lambda self: self.credentials_type == UNIX_SOCKET, takes_self=True),
        kw_only=True,
    )

    @property
    def is_full_admin(self) -> bool:
        return FULL_ADMIN in self.roles

    def has_role(self, role: str) -> bool:
        return role in self.roles or self.is_full_admin

    def to_credentials(self) -> dict[str, object]:
        data: dict[str, object] = {"username": self.username}
        if self.user_id is not None:
            data["user_id"] = self.user_id
        for key, value in self.credentials_data.items():
            if key not in data:
                data[key] = copy.deepcopy(value)
        return {"type": self.credentials_type, "data": data}
