"""
C{auth.*}: logging a connection in and out.
"""

from __future__ import annotations

import errno
import weakref
from typing import TYPE_CHECKING, Any

from twisted.cred.credentials import ICredentials, UsernamePassword
from twisted.cred.error import LoginFailed

from .. import wire_json
from ..auth import APIKeyCredentials, IUser, TokenCredentials, origin_of
from ..auth.gate import LoginGate
from ..auth.tokens import TooManyTokens
from ..config import Settings
from ..errors import CallError, ValidationErrors
from ..interfaces import ISession
from ..logs import logger
from ..service import Service, no_auth_required, no_authz_required, pass_app, secret, secret_result

if TYPE_CHECKING:
    from ..middleware import Middleware

log = logger(__name__)

#: The fields each C{auth.login_ex} mechanism needs, all strings.
_MECHANISMS = {
    "PASSWORD_PLAIN": ("username", "password"),
    "API_KEY_PLAIN": ("username", "api_key"),
}

#: Longest life of a token from auth.generate_token, in seconds.
_MAX_TOKEN_TTL = 86400


def user_info(user: IUser) -> dict[str, Any]:
    """
    What C{auth.me} and a successful login tell about the user.
    """
    return {
        "pw_name": user.username,
        "account_attributes": [],
        "privilege": {"roles": sorted(user.roles)},
        "credentials": user.to_credentials(),
    }


class AuthService(Service):
    namespace = "auth"

    def __init__(self, middleware: Middleware) -> None:
        super().__init__(middleware)
        #: The tokens each connection made or logged in with: its logout revokes them.
        self._tokens_of: weakref.WeakKeyDictionary[ISession, set[str]] = weakref.WeakKeyDictionary()

    @no_auth_required
    @secret("data.password", "data.api_key")
    @pass_app
    async def login_ex(self, app: ISession, data: dict[str, Any]) -> dict[str, Any]:
        """
        Log the connection in.  C{data} is C{{"mechanism": "PASSWORD_PLAIN",
        "username": ..., "password": ...}} or C{{"mechanism": "API_KEY_PLAIN",
        "username": ..., "api_key": ...}} (a key of that user).  Returns
        C{{"response_type": "SUCCESS", "user_info": ...}} or
        C{{"response_type": "AUTH_ERR"}}.
        """
        errors = ValidationErrors()
        mechanism = data.get("mechanism")
        fields = _MECHANISMS.get(mechanism) if isinstance(mechanism, str) else None
        if fields is None:
            errors.add("login_ex.mechanism", f"Unsupported mechanism: {mechanism!r}")
        for key in fields or _MECHANISMS["PASSWORD_PLAIN"]:
            if not isinstance(data.get(key), str):
                errors.add(f"login_ex.{key}", "A string is required")
        errors.check()
        if mechanism == "API_KEY_PLAIN":
            user = await self._login_with_api_key(app, data["api_key"], data["username"])
        else:
            user = await self._login(app, data["username"], data["password"])
        if user is None:
            return {"response_type": "AUTH_ERR"}
        return {"response_type": "SUCCESS", "user_info": user_info(user), "authenticator": "LEVEL_1"}

    @no_auth_required
    @secret("password")
    @pass_app
    async def login(self, app: ISession, username: str, password: str) -> bool:
        """
        Log the connection in with a username and password; C{True} if it worked.
        """
        return await self._login(app, username, password) is not None

    async def _login(self, app: ISession, username: str, password: str) -> IUser | None:
        return await self._log_in(app, UsernamePassword(username.encode(), password.encode()), "password")

    async def _log_in(self, app: ISession, credentials: ICredentials, kind: str) -> IUser | None:
        """
        Log C{app} in through the throttled portal; the user, or C{None} if refused.
        """
        try:
            user = await self._logins.login(credentials, origin_of(app.peer), kind)
        except LoginFailed:
            return None
        app.login(user)
        return user

    @no_auth_required
    @secret("api_key")
    @pass_app
    async def login_with_api_key(self, app: ISession, api_key: str) -> bool:
        """
        Log the connection in with a key from C{api_key.create}; C{True} if it worked.
        """
        return await self._login_with_api_key(app, api_key) is not None

    @property
    def _logins(self) -> LoginGate:
        logins = self.middleware.logins
        if logins is None:
            raise CallError("This daemon takes no logins (it has no portal)", errno.ENOTSUP)
        return logins

    async def _login_with_api_key(self, app: ISession, api_key: str, username: str | None = None) -> IUser | None:
        return await self._log_in(app, APIKeyCredentials(api_key, username), "API-key")

    @no_authz_required
    @secret_result()
    @pass_app
    async def generate_token(
        self,
        app: ISession,
        ttl: int = 600,
        attrs: dict[str, Any] | None = None,
        match_origin: bool = False,
        single_use: bool = False,
    ) -> str:
        """
        A token that logs in as this connection's user (C{auth.login_with_token}),
        valid for C{ttl} seconds (at most a day).  C{attrs} are kept with it
        (at most C{[limits] token_attrs} bytes of JSON); C{match_origin} makes
        it valid only from this connection's host; C{single_use} makes its
        first use its last.  A user holds at most C{[limits] tokens_per_user}
        live tokens: past that the call fails with C{EBUSY}.
        """
        errors = ValidationErrors()
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= _MAX_TOKEN_TTL:
            errors.add("generate_token.ttl", f"Must be an integer from 1 to {_MAX_TOKEN_TTL}")
        if attrs is not None and not isinstance(attrs, dict):
            errors.add("generate_token.attrs", "Must be an object")
        elif attrs:
            limit = self._settings.max_token_attrs
            if len(wire_json.dumps(attrs).encode("utf-8")) > limit:
                log.warn(
                    "Refused token attributes over {limit} bytes for {username} from {peer}",
                    limit=limit,
                    username=app.user.username,
                    peer=app.peer,
                )
                self.middleware.metrics.limit_hit("token_attrs")
                errors.add("generate_token.attrs", f"Must be at most {limit} bytes of JSON")
        errors.check()
        origin = origin_of(app.peer) if match_origin else None
        try:
            token = await self.middleware.tokens.create(
                app.user, ttl, attrs=attrs or {}, single_use=single_use, match_origin=origin
            )
        except TooManyTokens:
            log.warn(
                "Refused a token for {username} from {peer}: it holds {limit} live tokens",
                username=app.user.username,
                peer=app.peer,
                limit=self.middleware.tokens.max_per_user,
            )
            raise
        self._tokens_of.setdefault(app, set()).add(token)
        return token

    @property
    def _settings(self) -> Settings:
        settings: Settings | None = self.middleware.settings
        return settings if settings is not None else Settings()

    @no_auth_required
    @secret("token")
    @pass_app
    async def login_with_token(self, app: ISession, token: str) -> bool:
        """
        Log the connection in with a token from C{auth.generate_token}; C{True} if it worked.
        """
        credentials = TokenCredentials(token, origin=origin_of(app.peer))
        if await self._log_in(app, credentials, "token") is None:
            return False
        self._tokens_of.setdefault(app, set()).add(token)
        return True

    @no_auth_required
    @pass_app
    async def logout(self, app: ISession) -> bool:
        """
        Log the connection out, and revoke the tokens it made with
        C{auth.generate_token} or logged in with (a page that keeps one to
        log in again after a reload is logged out for good).
        """
        for token in self._tokens_of.pop(app, ()):
            await self.middleware.tokens.revoke(token)
        app.logout()
        return True

    @no_authz_required
    @pass_app
    async def me(self, app: ISession) -> dict[str, Any]:
        """
        Who this connection is logged in as.
        """
        return user_info(app.user)
