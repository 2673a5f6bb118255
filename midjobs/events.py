"""
Event fan-out: who is subscribed to what, and delivering each event once per subscriber.
"""

from __future__ import annotations

import uuid
from typing import Any, Awaitable, Callable

import attrs
from zope.interface import Attribute, Interface

from . import wire_json
from .logs import logger

__all__ = ["EventHub", "EventSource", "ISubscriber", "Subscription", "UnknownEvent"]

log = logger(__name__)


class ISubscriber(Interface):
    """
    One end that receives events: a WebSocket session.
    """

    user = Attribute(
        "Who is subscribed: an L{midjobs.auth.IUser}, or C{None} (who sees nothing)."
    )

    def send_event(payload: str) -> None:
        """
        Deliver one serialised C{collection_update} notification.
        """


class UnknownEvent(KeyError):
    """
    Nobody offers an event of that name.
    """


#: Whether a user may see one event: C{(user, name, fields)}.
EventFilter = Callable[[Any, str, "dict[str, Any] | None"], bool]


@attrs.frozen
class EventSource:
    """
    An event the daemon offers, and the rules of subscribing to it.

    @ivar description: what the event tells.
    @ivar may_see: whether a user may see one event of it (everyone logged
        in, if C{None}).
    @ivar prepare: checks a subscription before it is made (it may fail with
        a L{midjobs.errors.CallError}): C{await prepare(session, name)}.
    @ivar subscribed: runs once a subscription is made, for example to send
        the new subscriber what came before: C{subscribed(subscriber, name)}.
    """

    description: str
    may_see: EventFilter | None = None
    prepare: Callable[[Any, str], Awaitable[None]] | None = None
    subscribed: Callable[[Any, str], None] | None = None


@attrs.frozen
class Subscription:
    id: str
    name: str
    subscriber: Any


class EventHub:
    """
    The events the daemon offers and the subscriptions to them.

    C{*} subscribes to every event.  A notification is serialised once,
    however many subscribers it goes to.
    """

    def __init__(self) -> None:
        self._events: dict[str, EventSource] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._by_name: dict[str, dict[str, Subscription]] = {}

    def register(
        self,
        name: str,
        description: str,
        *,
        may_see: EventFilter | None = None,
        prepare: Callable[[Any, str], Awaitable[None]] | None = None,
        subscribed: Callable[[Any, str], None] | None = None,
    ) -> None:
        """
        Offer the event C{name}, and C{name:<argument>} events (see L{EventSource}).
        """
        self._events[name] = EventSource(description, may_see, prepare, subscribed)

    def events(self) -> dict[str, str]:
        """
        The offered events and their descriptions.
        """
        return {name: source.description for name, source in self._events.items()}

    def _source(self, name: str) -> EventSource | None:
        return self._events.get(name.split(":", 1)[0])

    def allows(self, user: Any, name: str, fields: dict[str, Any] | None) -> bool:
        """
        Whether C{user} may see the event C{name} about C{fields}.
        """
        if user is None:
            return False
        source = self._source(name)
        return source is None or source.may_see is None or source.may_see(user, name, fields)

    async def prepare(self, session: Any, name: str) -> None:
        """
        Check that C{session} may subscribe to C{name}.

        @raise UnknownEvent: C{name} is neither C{*} nor an offered event.
        """
        if name == "*":
            return
        source = self._source(name)
        if source is None:
            raise UnknownEvent(name)
        if source.prepare is not None:
            await source.prepare(session, name)

    def subscribe(self, subscriber: Any, name: str) -> str:
        """
        Subscribe C{subscriber} (an L{ISubscriber}) to C{name}; return the subscription id.

        @raise UnknownEvent: C{name} is neither C{*} nor an offered event.
        """
        source = self._source(name)
        if name != "*" and source is None:
            raise UnknownEvent(name)
        subscription = Subscription(str(uuid.uuid4()), name, subscriber)
        self._subscriptions[subscription.id] = subscription
        self._by_name.setdefault(name, {})[subscription.id] = subscription
        if source is not None and source.subscribed is not None:
            source.subscribed(subscriber, name)
        return subscription.id

    def unsubscribe(self, subscription_id: str) -> Subscription | None:
        """
        End a subscription; return it, or C{None} if there was none.
        """
        subscription = self._subscriptions.pop(subscription_id, None)
        if subscription is not None:
            by_name = self._by_name[subscription.name]
            del by_name[subscription_id]
            if not by_name:
                del self._by_name[subscription.name]
        return subscription

    def unsubscribe_all(self, subscriber: Any) -> None:
        """
        End every subscription of C{subscriber} (its connection closed).
        """
        for subscription in list(self._subscriptions.values()):
            if subscription.subscriber is subscriber:
                self.unsubscribe(subscription.id)

    def owns(self, subscriber: Any, subscription_id: str) -> bool:
        subscription = self._subscriptions.get(subscription_id)
        return subscription is not None and subscription.subscriber is subscriber

    def has_subscribers(self, name: str) -> bool:
        return name in self._by_name or "*" in self._by_name

    def send(self, name: str, msg: str, id: Any = None, fields: dict[str, Any] | None = None) -> None:
        """
        Send the C{collection_update} C{msg} (C{added}, C{changed}, C{removed})
        about the object C{id} of collection C{name} to its subscribers.
        """
        targets = [*self._by_name.get(name, {}).values(), *self._by_name.get("*", {}).values()]
        if not targets:
            return
        payload = _notification(name, msg, id, fields)
        delivered = set()
        for subscription in targets:
            subscriber = subscription.subscriber
            if subscriber in delivered:
                continue
            if self.allows(subscriber.user, name, fields):
                delivered.add(subscriber)
                try:
                    subscriber.send_event(payload)
                except Exception:
                    log.failure("Sending {name} to {subscriber} failed", name=name, subscriber=subscriber)

    def send_to(self, subscriber: Any, name: str, msg: str, id: Any = None, fields: dict[str, Any] | None = None) -> None:
        """
        Send one C{collection_update} to C{subscriber} alone (what came
        before it subscribed, say).
        """
        if self.allows(subscriber.user, name, fields):
            subscriber.send_event(_notification(name, msg, id, fields))


def _notification(name: str, msg: str, id: Any, fields: dict[str, Any] | None) -> str:
    params: dict[str, Any] = {"msg": msg, "collection": name, "id": id}
    if fields is not None:
        params["fields"] = fields
    return wire_json.dumps({"jsonrpc": "2.0", "method": "collection_update", "params": params})
