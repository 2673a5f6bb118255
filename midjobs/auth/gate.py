"""
The one way in: every login, over the WebSocket or HTTP, passes the
L{LoginGate}, which throttles failed attempts before the portal sees them.
"""

from __future__ import annotations

from typing import cast

from twisted.cred.credentials import ICredentials
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.cred.portal import Portal

from ..logs import logger
from ..counts import NO_COUNTS, ICounts
from .interfaces import IPeerCredentials, IUser
from .throttle import Key, LoginThrottle, source_key, user_key

__all__ = ["LOCAL_SOURCE", "LoginGate", "LoginThrottled"]

log = logger(__name__)

#: Longest user name remembered by the throttle; longer ones are cut.
_MAX_NAME = 256

#: The source of a login over the UNIX socket (L{midjobs.auth.origin_of} of
#: its address).  The daemon creates that socket with mode 0600, so its
#: peers are the daemon's own uid and root: the trusted uids, never throttled.
LOCAL_SOURCE = "unix"


class LoginThrottled(UnauthorizedLogin):
    """
    Too many failed logins from this source or for this user: try later.
    """


def _username(credentials: ICredentials) -> str | None:
    name = getattr(credentials, "username", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return name[:_MAX_NAME] if isinstance(name, str) and name else None


class LoginGate:
    """
    Logs in through C{portal}, counting failures in C{throttle} per source
    and per (source, user name): a user locked out from one address can
    still log in from another.

    Credentials that carry no secret (a UNIX-socket peer's), and any login
    over the UNIX socket (L{LOCAL_SOURCE}), pass unthrottled.

    Refused logins count in C{counts} (C{midjobs_logins_failed_total}), and
    throttled ones as the C{throttle} limit too.
    """

    def __init__(self, portal: Portal, throttle: LoginThrottle, counts: ICounts = NO_COUNTS) -> None:
        self.portal = portal
        self.throttle = throttle
        self.counts = counts

    async def login(self, credentials: ICredentials, source: str, kind: str) -> IUser:
        """
        The avatar of C{credentials}, presented from C{source} (the peer's
        host, L{midjobs.auth.origin_of}, the client's behind a trusted proxy);
        C{kind} names the mechanism in logs.

        @raise LoginThrottled: the source or the user must wait.
        @raise UnauthorizedLogin: the portal refused the credentials.
        @raise UnhandledCredentials: no checker takes them.
        """
        if IPeerCredentials.providedBy(credentials):
            return await self._login(credentials)
        username = _username(credentials)
        if source == LOCAL_SOURCE:
            return await self._login_locally(credentials, username, kind)
        keys: list[Key] = [source_key(source)]
        if username is not None:
            keys.append(user_key(source, username))
        wait = self.throttle.wait(keys)
        if wait:
            log.warn(
                "Refused a {kind} login for {username} from {source}: too many failures, {wait:.0f} s to wait",
                kind=kind,
                username=username,
                source=source,
                wait=wait,
            )
            self.counts.limit_hit("throttle")
            self.counts.login_failed()
            raise LoginThrottled("Too many failed logins: try again later")
        try:
            user = await self._login(credentials)
        except (UnauthorizedLogin, LoginFailed):
            self.throttle.failed(keys)
            self.counts.login_failed()
            log.info("Failed {kind} login for {username} from {source}", kind=kind, username=username, source=source)
            raise
        log.info("{username} logged in with a {kind} from {source}", username=user.username, kind=kind, source=source)
        return user

    async def _login_locally(self, credentials: ICredentials, username: str | None, kind: str) -> IUser:
        """
        Log in over the UNIX socket: failures are logged, never counted.
        """
        try:
            user = await self._login(credentials)
        except (UnauthorizedLogin, LoginFailed):
            self.counts.login_failed()
            log.info("Failed {kind} login for {username} over the UNIX socket", kind=kind, username=username)
            raise
        log.info("{username} logged in with a {kind} over the UNIX socket", username=user.username, kind=kind)
        return user

    async def _login(self, credentials: ICredentials) -> IUser:
        _, avatar, _ = await self.portal.login(credentials, None, IUser)
        # The realm answers the interface asked for.
        return cast(IUser, avatar)
