"""
What the layers below the metrics count: one small interface, so that the
HTTP, WebSocket and login code tell of a refused connection or a byte sent
without importing C{prometheus_client}.
"""

from __future__ import annotations

from typing import Final

from zope.interface import Interface, implementer

__all__ = ["LIMITS", "ICounts", "NO_COUNTS", "NoCounts"]

#: The limits of C{docs/limits.rst} a client can run into, as
#: C{midjobs_limit_hits_total} labels them: a fixed set, so no client can
#: make a new label value.
LIMITS: Final = (
    "connections",
    "connections_per_address",
    "header_timeout",
    "login_timeout",
    "subscriptions",
    "event_queue",
    "tokens_per_user",
    "jobs_per_user",
    "token_attrs",
    "history_queries",
    "body",
    "calls_in_flight",
    "upload_data",
    "throttle",
)


class ICounts(Interface):
    """
    Counters the daemon's lower layers increment.  Each call costs a counter
    increment and never fails.
    """

    def limit_hit(limit: str) -> None:
        """
        A client ran into C{limit}, one of L{LIMITS}.  Any other name is a
        programming error (C{KeyError}).
        """

    def login_failed() -> None:
        """
        A login was refused (wrong secret, unknown user, throttled).
        """

    def uploaded(size: int) -> None:
        """
        C{size} bytes of an upload's file parts reached a job.
        """

    def downloaded(size: int) -> None:
        """
        C{size} bytes of a download were handed to the connection.
        """


@implementer(ICounts)
class NoCounts:
    """
    Counts nothing: the default where no metrics are kept (in-memory tests).
    """

    def limit_hit(self, limit: str) -> None:
        pass

    def login_failed(self) -> None:
        pass

    def uploaded(self, size: int) -> None:
        pass

    def downloaded(self, size: int) -> None:
        pass


#: The one L{NoCounts}.
NO_COUNTS: Final = NoCounts()
