"""
What the job layer needs from the sessions that call it.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IConnectionSession", "ISession"]


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


class IConnectionSession(ISession):
    """
    A session that lasts as long as its connection (a WebSocket): it has
    options and event subscriptions (C{core.set_options}, C{core.subscribe}).
    """

    def options() -> dict[str, bool]:
        """
        The session's options: C{legacy_jobs}, C{private_methods}, C{py_exceptions}.
        """

    def set_options(options: dict[str, bool]) -> None:
        """
        Change the options named in C{options} (already checked).
        """

    def subscribe(name: str) -> str:
        """
        Subscribe to the event C{name}; return the subscription id.
        """

    def unsubscribe(subscription_id: str) -> bool:
        """
        End the subscription C{subscription_id}; whether the session held it.
        """
