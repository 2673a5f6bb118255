"""
Event fan-out: who is subscribed to what, and delivering each event once per subscriber.

The cost of an event is per subscriber (a connection), never per
subscription: a connection subscribed a thousand times to one name gets
each event once, after one visibility check.  The hub knows nothing of the
wire: a subscriber encodes a L{Notification} with the L{IEventSerializer} of
its protocol (the JSON-RPC one is in L{midjobs.rpc}), once for all the
subscribers that share it.
"""

from __future__ import annotations

import uuid
from typing import Any, Awaitable, Callable, Hashable

import attrs
from zope.interface import Attribute, Interface

from .logs import logger

__all__ = [
    "EventHub",
    "EventSource",
    "IEventSerializer",
    "ISubscriber",
    "Notification",
    "Subscription",
    "UnknownEvent",
]

log = logger(__name__)


@attrs.define(eq=False)
class Notification:
    """
    One C{collection_update}, shared by all its subscribers.

    @ivar collection: the event's name (C{core.get_jobs}, C{core.job_log:7}).
    @ivar msg: C{added}, C{changed} or C{removed}.
    @ivar id: the object it is about.
    @ivar payload: its encoding on the wire, once L{encode} made it.
    @ivar fields: the object's fields, if the event carries them.
    """

    collection: str
    msg: str
    id: Any
    payload: bytes | None = None
    fields: dict[str, Any] | None = None

    def encode(self, serializer: IEventSerializer) -> bytes:
        """
        The notification as C{serializer} writes it: encoded by the first
        subscriber that asks, and shared by the others.
        """
        if self.payload is None:
            self.payload = serializer.serialize(self)
        return self.payload

    @property
    def merge_key(self) -> Hashable | None:
        """
        What a newer notification must share for this one to be dropped in
        its favour while it waits to be sent: a C{changed} event's
        collection and id (the newer carries the whole state); C{None} for
        any other, which is never dropped.
        """
        if self.msg != "changed":
            return None
        try:
            hash(self.id)
        except TypeError:
            return None
        return (self.collection, self.id)


class IEventSerializer(Interface):
    """
    How a protocol writes a L{Notification} (the WebSocket's JSON-RPC
    C{collection_update}, L{midjobs.rpc}).
    """

    def serialize(notification: Notification) -> bytes:
        """
        The bytes of C{notification} on the wire.
        """


class ISubscriber(Interface):
    """
    One end that receives events: a WebSocket session.
    """

    user = Attribute(
        "Who is subscribed: an L{midjobs.auth.IUser}, or C{None} (who sees nothing)."
    )

    def send_event(notification: Notification) -> None:
        """
        Deliver one L{Notification} (encoding it with L{Notification.encode}).
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
    however many subscribers it goes to, and each subscriber (not each
    subscription) is checked once: subscribing again to the same name gives
    a new subscription id and costs nothing more per event.

    @ivar _subscriptions: every subscription, by id.
    @ivar _subscribers: by event name, each subscriber of it and the ids of
        its subscriptions to that name.
    @ivar _of_subscriber: by subscriber, its subscriptions.
    """

    def __init__(self) -> None:
        self._events: dict[str, EventSource] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._subscribers: dict[str, dict[Any, set[str]]] = {}
        self._of_subscriber: dict[Any, set[str]] = {}

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
        self._subscribers.setdefault(name, {}).setdefault(subscriber, set()).add(subscription.id)
        self._of_subscriber.setdefault(subscriber, set()).add(subscription.id)
        if source is not None and source.subscribed is not None:
            source.subscribed(subscriber, name)
        return subscription.id

    def subscription_count(self, subscriber: Any) -> int:
        """
        How many subscriptions C{subscriber} holds.
        """
        return len(self._of_subscriber.get(subscriber, ()))

    def unsubscribe(self, subscription_id: str) -> Subscription | None:
        """
        End a subscription; return it, or C{None} if there was none.
        """
        subscription = self._subscriptions.pop(subscription_id, None)
        if subscription is None:
            return None
        subscriber = subscription.subscriber
        subscribers = self._subscribers[subscription.name]
        ids = subscribers[subscriber]
        ids.discard(subscription_id)
        if not ids:
            del subscribers[subscriber]
            if not subscribers:
                del self._subscribers[subscription.name]
        own = self._of_subscriber[subscriber]
        own.discard(subscription_id)
        if not own:
            del self._of_subscriber[subscriber]
        return subscription

    def unsubscribe_all(self, subscriber: Any) -> None:
        """
        End every subscription of C{subscriber} (its connection closed).
        """
        for subscription_id in list(self._of_subscriber.get(subscriber, ())):
            self.unsubscribe(subscription_id)

    def owns(self, subscriber: Any, subscription_id: str) -> bool:
        subscription = self._subscriptions.get(subscription_id)
        return subscription is not None and subscription.subscriber is subscriber

    def has_subscribers(self, name: str) -> bool:
        return name in self._subscribers or "*" in self._subscribers

    def send(self, name: str, msg: str, id: Any = None, fields: dict[str, Any] | None = None) -> None:
        """
        Send the C{collection_update} C{msg} (C{added}, C{changed}, C{removed})
        about the object C{id} of collection C{name} to its subscribers.
        """
        named = self._subscribers.get(name)
        everything = self._subscribers.get("*")
        if named is None and everything is None:
            return
        if named is None or everything is None:
            targets: Any = named if everything is None else everything
        else:
            targets = {**named, **everything}
        notification = Notification(name, msg, id, None, fields)
        for subscriber in list(targets):
            if not self.allows(subscriber.user, name, fields):
                continue
            try:
                subscriber.send_event(notification)
            except Exception:
                log.failure("Sending {name} to {subscriber} failed", name=name, subscriber=subscriber)

    def send_to(self, subscriber: Any, name: str, msg: str, id: Any = None, fields: dict[str, Any] | None = None) -> None:
        """
        Send one C{collection_update} to C{subscriber} alone (what came
        before it subscribed, say).
        """
        if self.allows(subscriber.user, name, fields):
            subscriber.send_event(Notification(name, msg, id, None, fields))
