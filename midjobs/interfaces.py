"""
What the job layer needs from the sessions that call it.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["ISession"]


class ISession(Interface):
    """
    A caller: a WebSocket connection, or one HTTP request.

    Methods decorated with C{@pass_app} receive it.
    """

    user = Attribute(
        "The logged-in user (an L{midjobs.auth.IUser} avatar), or C{None} before login."
    )
    private_methods = Attribute("Whether the caller may see and call private methods (a bool).")
    peer = Attribute("The remote address, as C{twisted.internet.interfaces.IAddress}.")

    def login(user: object) -> None:
        """
        Make C{user} (an C{IUser} avatar the portal returned) the session's user.
        """

    def logout() -> None:
        """
        Forget the session's user.
        """
