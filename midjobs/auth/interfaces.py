"""
The interfaces of authentication: the avatar a login yields, and the
credentials of a UNIX-socket peer.
"""

from __future__ import annotations

from twisted.cred.credentials import ICredentials
from zope.interface import Attribute, Interface

__all__ = ["IPeerCredentials", "IUser"]


class IUser(Interface):
    """
    Who is calling: the avatar L{twisted.cred.portal.Portal.login} yields for
    every kind of login, over WebSocket and HTTP alike.
    """

    username = Attribute(
        "The user's name (C{str}); C{'root'} for a trusted UNIX-socket peer.  "
        "For display and logs only: a name can be renamed away and reused."
    )
    user_id = Attribute(
        "Who the user is: the stored user's id (C{int}, never reused), which "
        "owns jobs and tokens; C{None} for the trusted UNIX-socket peer, an "
        "identity of its own that no stored user shares, whatever its name."
    )
    local_peer = Attribute(
        "C{True} for the trusted UNIX-socket peer (and the tokens it made): "
        "its rights come from the socket, not from the user store."
    )
    api_key_id = Attribute(
        "The API key (C{int} id) this login comes from, directly or through "
        "tokens made from it, or C{None}: deleting the key ends the login."
    )
    web_session_id = Attribute(
        "The web session (C{int} id, never reused) this login comes from, through "
        "tokens traded for its cookie or made from such a login, or C{None}: the "
        "session's end ends the login."
    )
    roles = Attribute(
        "The roles held at login, a C{frozenset} of C{str}.  Read once: a change "
        "to the stored user takes effect at the next login."
    )
    credentials_type = Attribute(
        "How the user proved who they are (C{str}): C{'LOGIN_PASSWORD'}, "
        "C{'UNIX_SOCKET'}, and later kinds such as API keys and tokens."
    )
    is_full_admin = Attribute(
        "C{True} if the user holds C{FULL_ADMIN}, which allows everything."
    )

    def has_role(role: str) -> bool:
        """
        Whether the user holds C{role}; C{FULL_ADMIN} implies every role.
        """

    def to_credentials() -> dict[str, object]:
        """
        The JSON-ready record of this login that a job keeps, never a secret:
        C{{"type": credentials_type, "data": {"username": ..., "user_id": ...}}}
        (C{user_id} only for a stored user: the job's owner).
        """


class IPeerCredentials(ICredentials):
    """
    The kernel's word on who is at the other end of a UNIX socket
    (C{SO_PEERCRED}): nothing to verify, only to trust or not.
    """

    pid = Attribute("The peer's process id (C{int}) when it connected.")
    uid = Attribute("The peer's effective user id (C{int}).")
    gid = Attribute("The peer's effective group id (C{int}).")
