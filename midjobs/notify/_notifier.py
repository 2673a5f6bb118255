"""
The webhook notifier: each job's end, POSTed to the webhooks that want it,
from the durable outbox, with retries and back-off.

A job's end is written to the outbox (one notification per webhook that
wants it) as soon as the middleware hears of it; deliveries are claimed from
the outbox in the order they are due, at most C{concurrency} at once.  A 2xx
answer removes the notification; anything else (another status, a refused
connection, no answer within the webhook's timeout) schedules the next
attempt after the back-off, until it is given up.
"""

from __future__ import annotations

import uuid
import weakref
from enum import Enum, auto
from typing import Any, Callable, Iterable

from twisted.internet.defer import CancelledError, Deferred, DeferredList, TimeoutError
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.iweb import IResponse
from treq import collect
from treq.client import HTTPClient
from zope.interface import implementer

from .. import wire_json
from ..logs import logger
from ._backoff import BackOff
from ._interfaces import NO_DELIVERY_COUNTS, IDeliveryCounts, INotifier
from ._outbox import Claimed, Dropped, Notification, Outbox
from ._signature import signature_headers
from ..webhooks import Webhook, display_url

__all__ = ["NotifierState", "WebhookNotifier", "EVENT"]

log = logger(__name__)

#: The C{event} of every notification's body.
EVENT = "job.ended"
#: Bytes of a receiver's answer read (and thrown away); past it the connection is closed.
_MAX_ANSWER = 64 * 1024
_USER_AGENT = "midjobs-webhook/1"
#: Seconds after a failed read of the outbox before the next.
_RETRY_CLAIM = 5.0


class NotifierState(Enum):
    """
    Where a L{WebhookNotifier} is in its life.
    """

    #: Made, its outbox not yet read: jobs' ends are not taken.
    NEW = auto()
    #: Taking jobs' ends and delivering.
    RUNNING = auto()
    #: Stopping: no new attempt starts; those under way are cut short and
    #: written back as due, and notifications still being written are let finish.
    STOPPING = auto()
    #: Stopped: a job's end is logged as not notified.
    STOPPED = auto()


class _TooLong(Exception):
    pass


@implementer(INotifier)
class WebhookNotifier:
    """
    Tells webhooks of jobs' ends.

    @ivar state: a L{NotifierState}.
    @ivar pending: the notifications in the outbox, as last read (C{None}
        before L{start}).
    @ivar counts: what counts its deliveries (the daemon's metrics).
    """

    def __init__(
        self,
        reactor: Any,
        outbox: Outbox,
        webhooks: Iterable[Webhook],
        *,
        outbox_limit: int = 10000,
        concurrency: int = 4,
        backoff: BackOff | None = None,
        counts: IDeliveryCounts = NO_DELIVERY_COUNTS,
        new_delivery_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        """
        @param outbox_limit: the most notifications pending; past it the
            oldest are dropped.
        @param concurrency: the most deliveries under way at once.
        @param backoff: when failed deliveries are tried again (default: L{BackOff}'s).
        """
        self.reactor = reactor
        self.state = NotifierState.NEW
        self.pending: int | None = None
        self.counts = counts
        self._outbox = outbox
        self._webhooks = {webhook.url: webhook for webhook in webhooks}
        self._limit = outbox_limit
        self._concurrency = concurrency
        self._backoff = backoff if backoff is not None else BackOff()
        self._new_delivery_id = new_delivery_id
        self._http_pool = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]  # not annotated in Twisted
        self._http_pool.maxPersistentPerHost = concurrency
        self._http = HTTPClient(Agent(reactor, pool=self._http_pool))  # type: ignore[no-untyped-call]  # not annotated in Twisted
        #: The attempts under way, by outbox row.
        self._delivering: dict[int, Deferred[None]] = {}
        #: The outbox writes not yet done (the stop waits for them).
        self._writes: set[Deferred[Any]] = set()
        #: The jobs whose end was queued (a job's end is told once).
        self._told: weakref.WeakSet[Any] = weakref.WeakSet()
        self._timer: Any = None
        #: A claim under way, and whether another must follow it.
        self._claiming = False
        self._claim_again = False

    @property
    def idle(self) -> bool:
        """
        Whether nothing is left to do: no notification pending in the
        outbox, none being written to it, no attempt under way.
        """
        return self.pending == 0 and not self._writes and not self._delivering

    # Life.

    async def start(self) -> None:
        """
        Create the outbox's table if needed, read how many notifications
        wait, and start delivering those that are due.
        """
        await self._outbox.setup()
        self.pending = await self._outbox.count()
        self.state = NotifierState.RUNNING
        if self.pending:
            log.info("{count} webhook notification(s) pending from before the start", count=self.pending)
        self._claim()

    async def stop(self) -> None:
        """
        Start no more attempts, cut those under way short (they stay in the
        outbox, due at once), and wait until every write to the outbox is done.
        """
        if self.state is not NotifierState.RUNNING:
            self.state = NotifierState.STOPPED
            return
        self.state = NotifierState.STOPPING
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for attempt in list(self._delivering.values()):
            attempt.cancel()
        while self._writes or self._delivering:
            await DeferredList([*self._writes, *self._delivering.values()], consumeErrors=True)
        self.state = NotifierState.STOPPED
        await self._http_pool.closeCachedConnections()  # type: ignore[no-untyped-call]  # not annotated in Twisted

    # Jobs' ends.

    def listening(self) -> bool:
        return False

    def added(self, job: Any, record: dict[str, Any] | None) -> None:
        pass

    def changed(self, job: Any, record: dict[str, Any] | None) -> None:
        pass

    def ended(self, job: Any, record: dict[str, Any]) -> None:
        if job in self._told:
            return
        self._told.add(job)
        state = record["state"]
        webhooks = [webhook for webhook in self._webhooks.values() if webhook.wants(job.method, state)]
        if not webhooks:
            return
        if self.state not in (NotifierState.RUNNING, NotifierState.STOPPING):
            log.warn(
                "Job {job_id} ({method}) ended {state} while webhooks are stopped: not notified",
                job_id=job.id, method=job.method, state=state,
            )  # fmt: skip
            return
        now = self.reactor.seconds()
        notifications = []
        for webhook in webhooks:
            delivery = self._new_delivery_id()
            body = _dumps({"event": EVENT, "delivery": delivery, "job": record})
            notifications.append(Notification(None, delivery, webhook.url, job.id, body, now))
        self._write(self._outbox.add(notifications, self._limit), self._added)

    def _added(self, result: Dropped) -> None:
        self.pending = result.pending
        for notification in result.dropped:
            self.counts.webhook_delivery("dropped")
            log.error(
                "Webhook outbox full ({limit} pending): dropped delivery {delivery} of job {job_id} to {url}",
                limit=self._limit, delivery=notification.delivery, job_id=notification.job_id,
                url=display_url(notification.url),
            )  # fmt: skip
        self._claim()

    # Deliveries.

    def _claim(self) -> None:
        """
        Claim the notifications that are due, as many as may be delivered
        at once, and set the timer for the next one.
        """
        if self.state is not NotifierState.RUNNING:
            return
        if self._claiming:
            self._claim_again = True
            return
        self._claiming = True
        self._claim_again = False
        free = self._concurrency - len(self._delivering)
        claimed = self._outbox.claim(self.reactor.seconds(), free, self._backoff.delay, exclude=set(self._delivering))
        self._write(claimed, self._claimed).addCallback(self._claim_done)

    def _claim_done(self, ok: bool) -> None:
        self._claiming = False
        if not ok and self.state is NotifierState.RUNNING:
            # Logged by _write: look again in a while, whatever else happens meanwhile.
            self._set_timer(_RETRY_CLAIM)
        elif self._claim_again:
            self._claim()

    def _set_timer(self, delay: float) -> None:
        """
        Claim again in C{delay} seconds (and not before, unless something
        else calls for it).
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.reactor.callLater(delay, self._claim)

    def _claimed(self, claimed: Claimed) -> None:
        self.pending = claimed.pending
        if self.state is not NotifierState.RUNNING:
            # Claimed as the stop began: due at once at the next start.
            for notification in claimed.notifications:
                self._write(self._outbox.retry_at(notification, self.reactor.seconds()))
            return
        for notification in claimed.notifications:
            self._deliver(notification)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if claimed.next_due is not None and len(self._delivering) < self._concurrency:
            self._set_timer(max(0.0, claimed.next_due - self.reactor.seconds()))

    def _deliver(self, notification: Notification) -> None:
        assert notification.id is not None
        webhook = self._webhooks.get(notification.url)
        if webhook is None:
            self.counts.webhook_delivery("dropped")
            log.warn(
                "Dropped delivery {delivery} of job {job_id}: {url} is no longer a configured webhook",
                delivery=notification.delivery, job_id=notification.job_id, url=display_url(notification.url),
            )  # fmt: skip
            self._remove(notification)
            return
        timestamp = int(self.reactor.seconds())
        headers: dict[bytes | str, bytes | str] = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
        for name, value in signature_headers(webhook.secret, timestamp, notification.body, notification.delivery).items():
            headers[name] = value
        attempt: Deferred[Any] = self._http.post(
            webhook.url,
            data=notification.body,
            headers=headers,
            auth=webhook.auth,
            allow_redirects=False,
            unbuffered=True,
        )
        attempt.addCallback(_answered)
        attempt.addTimeout(webhook.timeout, self.reactor)
        self._delivering[notification.id] = attempt
        attempt.addCallbacks(
            self._delivered, self._failed, callbackArgs=(notification, webhook), errbackArgs=(notification, webhook)
        )
        attempt.addBoth(self._attempt_over, notification)

    def _attempt_over(self, result: Any, notification: Notification) -> None:
        assert notification.id is not None
        self._delivering.pop(notification.id, None)
        if isinstance(result, Failure):
            log.failure("A webhook delivery went wrong", result)
        self._claim()

    def _delivered(self, _: object, notification: Notification, webhook: Webhook) -> None:
        self.counts.webhook_delivery("delivered")
        log.debug(
            "Webhook {url}: delivered {delivery} of job {job_id} (attempt {attempt})",
            url=webhook.display_url, delivery=notification.delivery, job_id=notification.job_id,
            attempt=notification.attempts,
        )  # fmt: skip
        self._remove(notification)

    def _failed(self, failure: Failure, notification: Notification, webhook: Webhook) -> None:
        now = self.reactor.seconds()
        if self.state is not NotifierState.RUNNING and isinstance(_unwrapped(failure).value, CancelledError):
            # Cut short by the stop: due again at once at the next start.
            self._write(self._outbox.retry_at(notification, now))
            return
        reason = _reason(failure, webhook)
        age = now - notification.created
        if self._backoff.gives_up(notification.attempts, age):
            self.counts.webhook_delivery("gave_up")
            log.error(
                "Webhook {url}: gave up delivery {delivery} of job {job_id} after {attempts} attempt(s) "
                "over {age:.0f} s: {reason}",
                url=webhook.display_url, delivery=notification.delivery, job_id=notification.job_id,
                attempts=notification.attempts, age=age, reason=reason,
            )  # fmt: skip
            self._remove(notification)
            return
        self.counts.webhook_delivery("failed")
        delay = self._backoff.delay(notification.attempts)
        log.warn(
            "Webhook {url}: delivery {delivery} of job {job_id} failed (attempt {attempt}): {reason}; "
            "next attempt in {delay:g} s",
            url=webhook.display_url, delivery=notification.delivery, job_id=notification.job_id,
            attempt=notification.attempts, reason=reason, delay=delay,
        )  # fmt: skip
        self._write(self._outbox.retry_at(notification, now + delay))

    def _remove(self, notification: Notification) -> None:
        self._write(self._outbox.remove(notification), self._removed)

    def _removed(self, pending: int) -> None:
        self.pending = pending

    def _write(self, d: Deferred[Any], then: Callable[[Any], Any] | None = None) -> Deferred[bool]:
        """
        Track the outbox write C{d} until it is done and C{then} has handled
        its result (the stop waits for both); a failure of either is logged.

        @return: C{d}, firing with whether all went well.
        """
        self._writes.add(d)

        def done(result: Any) -> bool:
            self._writes.discard(d)
            if isinstance(result, Failure):
                log.failure("Writing the webhook outbox failed", result)
                return False
            return True

        if then is not None:
            d.addCallback(then)
        d.addBoth(done)
        return d


def _answered(response: IResponse) -> Deferred[None]:
    """
    Read (and throw away) the receiver's answer, up to L{_MAX_ANSWER}
    bytes; fail unless its status is 2xx.
    """
    read = [0]

    def discard(data: bytes) -> None:
        read[0] += len(data)
        if read[0] > _MAX_ANSWER:
            raise _TooLong()

    def check(_: object) -> None:
        if not 200 <= response.code < 300:
            phrase = response.phrase.decode("ascii", "replace") if response.phrase else ""
            raise _Refused(f"HTTP {response.code} {phrase}".strip())

    d: Deferred[None] = collect(response, discard)
    # A long or broken answer does not change what its status said.
    d.addErrback(lambda f: None)
    d.addCallback(check)
    return d


class _Refused(Exception):
    """
    The receiver answered with a status other than 2xx.
    """


def _reason(failure: Failure, webhook: Webhook) -> str:
    """
    Why an attempt failed, in a few words.
    """
    failure = _unwrapped(failure)
    if isinstance(failure.value, (TimeoutError, CancelledError)):
        return f"no answer within {webhook.timeout:g} s"
    if isinstance(failure.value, _Refused):
        return str(failure.value)
    return failure.getErrorMessage() or type(failure.value).__name__


def _unwrapped(failure: Failure) -> Failure:
    """
    The first reason of a L{ResponseNeverReceived}, or C{failure} itself.
    """
    error = failure.value
    if isinstance(error, ResponseNeverReceived) and error.reasons:
        first: Failure = error.reasons[0]
        return first
    return failure


def _dumps(value: Any) -> bytes:
    """
    C{value} as JSON with the protocol's extended values; a value that has
    no JSON form is written as its C{repr()}.
    """
    return wire_json.lenient_dumps(value).encode("utf-8")
