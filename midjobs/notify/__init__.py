"""
Notifications when a job ends: webhooks (C{[notify] webhooks}), signed,
retried with back-off from a durable outbox.  See C{docs/notifications.rst}.
"""

from ._backoff import BackOff
from ._interfaces import DELIVERY_OUTCOMES, NO_DELIVERY_COUNTS, IDeliveryCounts, INotifier
from ._notifier import EVENT, NotifierState, WebhookNotifier
from ._outbox import OUTBOX_SCHEMA, Notification, Outbox
from ._signature import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify
from ..webhooks import FINAL_STATES, Webhook, display_url, webhooks_from_config

__all__ = [
    "BackOff",
    "DELIVERY_HEADER",
    "DELIVERY_OUTCOMES",
    "EVENT",
    "FINAL_STATES",
    "IDeliveryCounts",
    "INotifier",
    "NO_DELIVERY_COUNTS",
    "Notification",
    "NotifierState",
    "OUTBOX_SCHEMA",
    "Outbox",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Webhook",
    "WebhookNotifier",
    "display_url",
    "sign",
    "verify",
    "webhooks_from_config",
]
