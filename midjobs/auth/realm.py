"""
The realm: turns an L{AvatarId} into the L{User} avatar with its current roles.
"""

from __future__ import annotations

from typing import Callable

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred
from zope.interface import Interface, implementer

from midjobs.auth.avatar import UNIX_SOCKET, AvatarId, User
from midjobs.auth.endings import EndedLogins, LoginEnded
from midjobs.auth.interfaces import IUser
from midjobs.auth.roles import FULL_ADMIN
from midjobs.auth.users import UserStore

__all__ = ["Realm", "ended_logins_of"]

AvatarTuple = tuple[type[Interface], User, Callable[[], None]]


def _logout() -> None:
    """
    Nothing to release: a session drops its avatar when it ends.
    """


@implementer(IRealm)
class Realm:
    """
    Gives L{IUser} avatars.

    A trusted UNIX-socket peer is C{root} with C{FULL_ADMIN} and no stored
    id: an identity of its own, whatever stored user is named C{root}.  Any
    other login (password, token, API key) names its stored user by id, and
    gets that user's name and roles as they are now; it fails with
    L{UnauthorizedLogin} if that user has since been deleted or locked (so a
    token of a deleted user never logs in a new account of the same name).
    The avatar id's C{credentials_data} goes to the avatar as it is.

    An avatar id with no user id (from a checker that knows only a name, or a
    token made for an avatar built by hand) gets the roles of the user of that
    name, but no identity: it owns no job and is owned by no one.

    A login whose user, API key or web session ended while it was checked
    (C{ended_logins}, which the daemon tells) fails with L{LoginEnded}.
    """

    def __init__(self, users: UserStore) -> None:
        self._users = users
        #: The logins that ended lately (L{midjobs.middleware.Middleware} says which).
        self.ended_logins = EndedLogins()

    def requestAvatar(  # type: ignore[override]  # twisted.cred's annotations say an avatar id is bytes; any value goes
        self, avatarId: AvatarId, mind: object, *interfaces: type[Interface]
    ) -> Deferred[AvatarTuple]:
        return Deferred.fromCoroutine(self._avatar(avatarId, interfaces))

    async def _avatar(self, avatarId: AvatarId, interfaces: tuple[type[Interface], ...]) -> AvatarTuple:
        if IUser not in interfaces:
            raise NotImplementedError("this realm only gives IUser avatars")
        if not isinstance(avatarId, AvatarId):
            raise TypeError(f"expected an AvatarId from the checker, got {avatarId!r}")
        if avatarId.credentials_type == UNIX_SOCKET:
            return IUser, User(avatarId.username, frozenset({FULL_ADMIN}), UNIX_SOCKET), _logout
        data = avatarId.credentials_data
        if getattr(avatarId, "trusted_peer", False):
            # A token a trusted peer made: its rights and identity, not a stored user's.
            avatar = User(
                avatarId.username,
                frozenset({FULL_ADMIN}),
                avatarId.credentials_type,
                credentials_data=data,
                local_peer=True,
            )
            return IUser, avatar, _logout
        if avatarId.user_id is None:
            user = await self._users.get_by_username(avatarId.username)
            user_id = None
        else:
            user = await self._users.find(avatarId.user_id)
            user_id = avatarId.user_id
        if user is None or user["locked"]:
            raise UnauthorizedLogin(f"user {avatarId.username!r} is gone or locked")
        if self.ended_logins.ended(
            user_id=user_id, api_key_id=avatarId.api_key_id, web_session_id=avatarId.web_session_id
        ):
            raise LoginEnded(f"the login of {avatarId.username!r} ended while it was checked")
        avatar = User(
            user["username"],
            frozenset(user["roles"]),
            avatarId.credentials_type,
            credentials_data=data,
            user_id=user_id,
            api_key_id=avatarId.api_key_id,
            web_session_id=avatarId.web_session_id,
        )
        return IUser, avatar, _logout


def ended_logins_of(portal: object) -> EndedLogins | None:
    """
    The logins that ended lately, as the L{Realm} of C{portal} knows them, if it is one.
    """
    realm = getattr(portal, "realm", None)
    return realm.ended_logins if isinstance(realm, Realm) else None
