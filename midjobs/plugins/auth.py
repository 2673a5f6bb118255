"""
C{auth.*}: logging a connection in and out.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from ..logs import logger

from ..auth import login
from ..errors import ValidationErrors
from ..interfaces import ISession
from ..service import Service, no_auth_required, pass_app

log = logger(__name__)

#: Longest username or password a login looks at.
_MAX_SECRET = 1024


def user_info(user: Any) -> dict[str, Any]:
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

    @no_auth_required
    @pass_app
    async def login_ex(self, app: ISession, data: dict) -> dict:
        """
        Log the connection in.  C{data} is C{{"mechanism": "PASSWORD_PLAIN",
        "username": ..., "password": ...}}.  Returns C{{"response_type":
        "SUCCESS", "user_info": ...}} or C{{"response_type": "AUTH_ERR"}}.
        """
        errors = ValidationErrors()
        mechanism = data.get("mechanism")
        if mechanism != "PASSWORD_PLAIN":
            errors.add("login_ex.mechanism", f"Unsupported mechanism: {mechanism!r}")
        for key in ("username", "password"):
            if not isinstance(data.get(key), str):
                errors.add(f"login_ex.{key}", "A string is required")
        errors.check()
        user = await self._login(app, data["username"], data["password"])
        if user is None:
            return {"response_type": "AUTH_ERR"}
        return {"response_type": "SUCCESS", "user_info": user_info(user), "authenticator": "LEVEL_1"}

    @no_auth_required
    @pass_app
    async def login(self, app: ISession, username: str, password: str) -> bool:
        """
        Log the connection in with a username and password; C{True} if it worked.
        """
        return await self._login(app, username, password) is not None

    async def _login(self, app: ISession, username: str, password: str) -> Any:
        if not username or not password or len(username) > _MAX_SECRET or len(password) > _MAX_SECRET:
            log.info("Failed login from {peer}", peer=app.peer)
            return None
        try:
            user = await login(self.middleware.portal, UsernamePassword(username.encode(), password.encode()))
        except UnauthorizedLogin:
            log.info("Failed login from {peer}", peer=app.peer)
            return None
        app.login(user)
        log.info("{username} logged in from {peer}", username=user.username, peer=app.peer)
        return user

    @no_auth_required
    @pass_app
    async def logout(self, app: ISession) -> bool:
        """
        Log the connection out.
        """
        app.logout()
        return True

    @pass_app
    async def me(self, app: ISession) -> dict:
        """
        Who this connection is logged in as.
        """
        return user_info(app.user)
