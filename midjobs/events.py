"""
Event fan-out: who is subscribed to what, and delivering each event once per subscriber.
"""

from __future__ import annotations

import uuid
from typing import Any

import attrs
from zope.interface import Interface

from . import wire_json
from .logs import logger

__all__ = ["EventHub", "ISubscriber", "Subscription", "UnknownEvent"]

log = logger(__name__)


class ISubscriber(Interface):
    """
    One end that receives events: a WebSocket session.
    """

    def may_see(name: str, fields: dict[str, Any] | None) -> bool:
        """
        Whether the event C{name} about C{fields} may go to this subscriber.
        """

    def send_event(payload: str) -> None:
        """
        Deliver one serialised C{collection_update} notification.
        """


class UnknownEvent(KeyError):
    """
    Nobody offers an event of that name.
    """


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
        self._events: dict[str, str] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._by_name: dict[str, dict[str, Subscription]] = {}

    def register(self, name: str, description: str) -> None:
        """
        Offer the event C{name}.
        """
        self._events[name] = description

    def events(self) -> dict[str, str]:
        """
        The offered events and their descriptions.
        """
        return dict(self._events)

    def subscribe(self, subscriber: Any, name: str) -> str:
        """
        Subscribe C{subscriber} (an L{ISubscriber}) to C{name}; return the subscription id.

        @raise UnknownEvent: C{name} is neither C{*} nor an offered event.
        """
        if name != "*" and name.split(":", 1)[0] not in self._events:
            raise UnknownEvent(name)
        subscription = Subscription(str(uuid.uuid4()), name, subscriber)
        self._subscriptions[subscription.id] = subscription
        self._by_name.setdefault(name, {})[subscription.id] = subscription
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
        params: dict[str, Any] = {"msg": msg, "collection": name, "id": id}
        if fields is not None:
            params["fields"] = fields
        payload = wire_json.dumps({"jsonrpc": "2.0", "method": "collection_update", "params": params})
        delivered = set()
        for subscription in targets:
            subscriber = subscription.subscriber
            if subscriber in delivered:
                continue
            if subscriber.may_see(name, fields):
                delivered.add(subscriber)
                try:
                    subscriber.send_event(payload)
                except Exception:
                    log.failure("Sending {name} to {subscriber} failed", name=name, subscriber=subscriber)
