"""
The state of one WebSocket connection: who is logged in, its options, its subscriptions.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Callable

from zope.interface import implementer

from ..config import Settings
from ..errors import CallError
from ..events import ISubscriber, Notification
from ..interfaces import IConnectionSession
from ..logs import logger
from ._outbox import Outbox

if TYPE_CHECKING:
    from ..middleware import Middleware

__all__ = ["Session"]

log = logger(__name__)

#: The settings of a middleware that has none (in-memory tests).
_DEFAULTS = Settings()


@implementer(IConnectionSession, ISubscriber)
class Session:
    """
    A WebSocket connection as the middleware sees it.

    @ivar outbox: where its events go (and its answers, in the same order).
    @ivar legacy_jobs: a job method answers with its id at once (C{True},
        the default) or with its result when it ends.
    @ivar private_methods: private methods are visible.
    @ivar py_exceptions: accepted and ignored (midjobs never pickles exceptions).
    """

    def __init__(
        self,
        middleware: Middleware,
        peer: Any,
        outbox: Outbox,
        on_login: Callable[[], None] = lambda: None,
        on_logout: Callable[[], None] = lambda: None,
    ) -> None:
        self.middleware = middleware
        self.peer = peer
        self.user: Any = None
        self.legacy_jobs = True
        self.private_methods = False
        self.py_exceptions = False
        self.outbox = outbox
        self._on_login = on_login
        self._on_logout = on_logout
        self.open = True
        self._refused_subscriptions = False

    def __repr__(self) -> str:
        return f"<Session {self._who()}@{self.peer}>"

    def _who(self) -> str:
        return self.user.username if self.user is not None else "anonymous"

    @property
    def _settings(self) -> Settings:
        settings = getattr(self.middleware, "settings", None)
        return settings if settings is not None else _DEFAULTS

    # ISession

    def login(self, user: Any) -> None:
        self.user = user
        self.middleware.sessions.add(self)
        self._on_login()

    def logout(self) -> None:
        self.user = None
        self.middleware.sessions.discard(self)
        self._on_logout()

    def options(self) -> dict[str, bool]:
        return {
            "legacy_jobs": self.legacy_jobs,
            "private_methods": self.private_methods,
            "py_exceptions": self.py_exceptions,
        }

    def set_options(self, options: dict[str, bool]) -> None:
        for name in ("legacy_jobs", "private_methods", "py_exceptions"):
            if name in options:
                setattr(self, name, bool(options[name]))

    # Subscriptions.

    def subscribe(self, name: str) -> str:
        """
        Subscribe to C{name}, within the connection's C{max_subscriptions}.

        @raise CallError: C{EBUSY}, the connection holds as many as it may
            (the first refusal on a connection is logged).
        """
        events = self.middleware.events
        limit = self._settings.max_subscriptions
        if events.subscription_count(self) >= limit:
            if not self._refused_subscriptions:
                self._refused_subscriptions = True
                log.warn(
                    "Refused a subscription of {user} from {peer}: {limit} subscriptions on one connection",
                    user=self._who(),
                    peer=self.peer,
                    limit=limit,
                )
            counts = getattr(self.middleware, "metrics", None)
            if counts is not None:
                counts.limit_hit("subscriptions")
            raise CallError(f"Too many subscriptions on this connection ({limit})", errno.EBUSY)
        return events.subscribe(self, name)

    def unsubscribe(self, subscription_id: str) -> bool:
        if not self.middleware.events.owns(self, subscription_id):
            return False
        self.middleware.events.unsubscribe(subscription_id)
        return True

    def closed(self) -> None:
        """
        The connection went away: its subscriptions end; its jobs go on.
        """
        self.open = False
        self.middleware.sessions.discard(self)
        self.middleware.events.unsubscribe_all(self)

    # ISubscriber

    def send_event(self, notification: Notification) -> None:
        if self.open:
            self.outbox.send_event(notification)
