"""
The caller of one HTTP request, as the middleware sees it.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import IAddress
from zope.interface import implementer

from ..auth.interfaces import IUser
from ..interfaces import ISession

__all__ = ["HttpSession"]


@implementer(ISession)
class HttpSession:
    """
    An L{ISession} that lives as long as one HTTP request: its user is the
    one the request's credentials logged in; it never sees private methods.
    """

    private_methods = False

    def __init__(self, peer: IAddress, user: IUser | None = None) -> None:
        self.peer = peer
        self.user = user

    def __repr__(self) -> str:
        who = self.user.username if self.user is not None else "anonymous"
        return f"<HttpSession {who}@{self.peer}>"

    def login(self, user: object) -> None:
        # ISession.login takes the avatar the portal gave for IUser.
        self.user = cast(IUser, user)

    def logout(self) -> None:
        self.user = None
