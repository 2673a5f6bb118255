"""
Credentials checkers: one per kind of secret, each yielding an L{AvatarId}.

Register new kinds (API keys, single-use tokens) on the portal beside these.
"""

from __future__ import annotations

from typing import Iterable

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from midjobs.auth.avatar import LOGIN_PASSWORD, UNIX_SOCKET, AvatarId
from midjobs.auth.interfaces import IPeerCredentials
from midjobs.auth.users import UserStore

__all__ = ["PasswordChecker", "PeerCredentialsChecker"]

#: The one message for every failed password login, whatever the reason.
BAD_LOGIN = "Invalid username or password"


def _text(value: str | bytes) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


@implementer(ICredentialsChecker)
class PasswordChecker:
    """
    Checks a username and password against the user store.

    A wrong password, an unknown or locked user and an empty password all fail
    alike with L{UnauthorizedLogin}.  Username and password may be C{str} or
    UTF-8 C{bytes} (as HTTP basic authentication gives them).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: UserStore) -> None:
        self._users = users

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[AvatarId]:  # type: ignore[override]  # twisted.cred's annotations say an avatar id is bytes; any value goes
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: IUsernamePassword) -> AvatarId:
        username = _text(credentials.username)
        password = _text(credentials.password)
        if username is None or not password:
            raise UnauthorizedLogin(BAD_LOGIN)
        user = await self._users.check_password(username, password)
        if user is None or user["locked"]:
            raise UnauthorizedLogin(BAD_LOGIN)
        return AvatarId(user["username"], LOGIN_PASSWORD, user_id=user["id"])


@implementer(ICredentialsChecker)
class PeerCredentialsChecker:
    """
    Trusts a UNIX-socket peer whose uid is in C{trusted_uids} as C{root}.
    """

    credentialInterfaces = (IPeerCredentials,)

    def __init__(self, trusted_uids: Iterable[int]) -> None:
        self._trusted_uids = frozenset(trusted_uids)

    def requestAvatarId(self, credentials: IPeerCredentials) -> Deferred[AvatarId]:  # type: ignore[override]  # twisted.cred's annotations say an avatar id is bytes; any value goes
        if credentials.uid in self._trusted_uids:
            return succeed(AvatarId("root", UNIX_SOCKET))
        return fail(UnauthorizedLogin(f"uid {credentials.uid} is not trusted"))
