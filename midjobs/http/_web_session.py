"""
C{/_session}: the web page's login, kept in an C{HttpOnly} cookie instead of
a password in the browser (L{midjobs.auth.web_sessions}).

  - C{POST /_session} with C{Authorization: Basic} (a user name and
    password), C{Bearer} (an API key) or C{Token} (a login token: the page
    logs its WebSocket in, then makes a single-use token there), as
    C{/_upload} takes them, logs in through the same throttled L{LoginGate}
    as the WebSocket, starts a session and sets the cookie
    C{midjobs_session} (C{HttpOnly}, C{SameSite=Strict}, C{Path=/},
    C{Secure} over TLS); answers C{{"username"}}.
  - C{POST /_session/token} trades the cookie for a single-use login token
    (C{auth.login_with_token}) valid for L{TOKEN_TTL} seconds from the
    caller's address: C{{"token", "username"}}, or C{{"token": null}} if
    there is no live session (a page's first load: no error status, which
    a browser would log as one).
  - C{DELETE /_session} (or C{POST /_session/logout}) ends the session, for
    every tab that shares the cookie, and clears it.  Every WebSocket logged
    in through the session (with a token traded for the cookie, or made from
    such a login) is logged out, on every node
    (L{midjobs.middleware.Middleware.web_sessions_ended}).

Each needs the header C{X-Requested-With} (a cross-site form cannot send it)
and, when the browser sends an C{Origin}, one the WebSocket would accept
(L{OriginPolicy}): a page from elsewhere can neither log the browser in nor
use or end its session.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from twisted.cred.credentials import ICredentials
from twisted.cred.error import LoginFailed, UnauthorizedLogin, UnhandledCredentials

from ..auth.avatar import AvatarId
from ..auth.endings import LoginEnded
from ..auth.gate import LoginThrottled
from ..auth.interfaces import IUser
from ..auth.realm import Realm
from ..auth.tokens import TooManyTokens, origin_of
from ..logs import logger
from ..origins import OriginPolicy
from ._auth import AuthenticationFailed, credentials_from

if TYPE_CHECKING:
    from ..middleware import Middleware

__all__ = ["COOKIE", "TOKEN_TTL", "WebSessionRoutes"]

log = logger(__name__)

#: The name of the session's cookie.
COOKIE: Final = b"midjobs_session"

#: Seconds a token traded for the cookie stays valid: long enough to open a WebSocket.
TOKEN_TTL: Final = 60

#: The kind of login of the avatar a session's token is made for.
WEB_SESSION: Final = "WEB_SESSION"

class _Refused(Exception):
    """
    The answer is C{code} with C{message}: nothing was changed.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _answer(request: Any, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body).encode("utf-8")


def _header(request: Any, name: bytes) -> str | None:
    values = request.requestHeaders.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None


def _credentials(request: Any) -> ICredentials:
    """
    The credentials of a login: C{Authorization: Basic}, C{Bearer} or
    C{Token}, as C{/_upload} takes them (no other route takes a body).
    """
    try:
        credentials = credentials_from(request)
    except AuthenticationFailed as e:
        raise _Refused(400, str(e)) from None
    if credentials is None:
        raise _Refused(400, "Log in with Authorization: Basic, Bearer or Token")
    return credentials


class WebSessionRoutes:
    """
    The answers of C{/_session} for one daemon (see the module docstring).
    """

    def __init__(self, middleware: Middleware) -> None:
        self.middleware = middleware
        settings = middleware.settings
        self.origins = OriginPolicy.from_strings(getattr(settings, "allowed_origins", ()))

    async def login(self, request: Any) -> bytes:
        """
        C{POST /_session}.
        """
        try:
            self._check_request(request)
            user = await self._log_in(request, _credentials(request))
            store = self.middleware.web_sessions
            if store is None:
                raise _Refused(404, "This daemon keeps no web sessions")
            secret = await store.create(user.user_id, user.api_key_id)
        except _Refused as e:
            return _answer(request, e.code, {"error": str(e)})
        self._set_cookie(request, secret.encode("ascii"))
        return _answer(request, 200, {"username": user.username})

    async def token(self, request: Any) -> bytes:
        """
        C{POST /_session/token}.
        """
        try:
            self._check_request(request)
            user = await self._session_user(request)
            if user is None:
                # What a page finds at its first load: no error (a browser would log one).
                return _answer(request, 200, {"token": None})
            try:
                token = await self.middleware.tokens.create(
                    user, TOKEN_TTL, single_use=True, match_origin=origin_of(request.getClientAddress())
                )
            except TooManyTokens:
                raise _Refused(429, "Too many live tokens: try again later") from None
        except _Refused as e:
            return _answer(request, e.code, {"error": str(e)})
        return _answer(request, 200, {"token": token, "username": user.username})

    async def logout(self, request: Any) -> bytes:
        """
        C{DELETE /_session} or C{POST /_session/logout}: ends the session if
        there is one, and clears the cookie.
        """
        try:
            self._check_request(request)
        except _Refused as e:
            return _answer(request, e.code, {"error": str(e)})
        secret = request.getCookie(COOKIE)
        store = self.middleware.web_sessions
        ended = False
        if secret and store is not None:
            ended = await store.end(secret.decode("latin-1"))
        self._set_cookie(request, b"", clear=True)
        return _answer(request, 200, {"ended": ended})

    def _check_request(self, request: Any) -> None:
        """
        Refuse what a page from elsewhere could send (see the module docstring).
        """
        if not request.requestHeaders.hasHeader(b"X-Requested-With"):
            raise _Refused(403, "X-Requested-With is required")
        origin = _header(request, b"Origin")
        if not self.origins.allows(origin, _header(request, b"Host"), request.isSecure()):
            log.warn(
                "Refused a {method} {path} from {peer}: origin {origin!r} is not allowed",
                method=request.method.decode("ascii", "replace"),
                path=request.path.decode("ascii", "replace"),
                peer=origin_of(request.getClientAddress()),
                origin=origin,
            )
            raise _Refused(403, "Origin not allowed")

    async def _log_in(self, request: Any, credentials: ICredentials) -> IUser:
        logins = self.middleware.logins
        if logins is None:
            raise _Refused(401, "This daemon accepts no logins")
        try:
            user = await logins.login(credentials, origin_of(request.getClientAddress()), "web session login")
        except LoginThrottled as e:
            raise _Refused(429, str(e)) from None
        except (UnauthorizedLogin, LoginFailed, UnhandledCredentials):
            raise _Refused(401, "Invalid credentials") from None
        if user.user_id is None:
            raise _Refused(400, "A web session is for a stored user")
        return user

    async def _session_user(self, request: Any) -> IUser | None:
        """
        The user of the request's live session, as the user store has it now,
        or L{None} if there is none.  A session whose user is gone or locked ends.
        """
        secret = request.getCookie(COOKIE)
        store = self.middleware.web_sessions
        if not secret or store is None:
            return None
        session = await store.use(secret.decode("latin-1"))
        if session is None:
            return None
        realm = getattr(self.middleware.portal, "realm", None)
        if not isinstance(realm, Realm):
            raise _Refused(401, "This daemon accepts no logins")
        avatar_id = AvatarId(
            "", WEB_SESSION, user_id=session.user_id, api_key_id=session.api_key_id, web_session_id=session.id
        )
        try:
            _, avatar, _ = await realm.requestAvatar(avatar_id, None, IUser)
        except LoginEnded:
            # Its user, key or session ended as it was read: the ending ends the sessions it must.
            return None
        except UnauthorizedLogin:
            # Its user is gone or locked.
            await store.end_of_user(session.user_id)
            return None
        return avatar

    @staticmethod
    def _set_cookie(request: Any, value: bytes, clear: bool = False) -> None:
        request.addCookie(
            COOKIE,
            value,
            path=b"/",
            secure=bool(request.isSecure()) or None,
            httpOnly=True,
            sameSite="strict",
            max_age=b"0" if clear else None,
        )
