"""
Where the notifier meets the job queue (which tells it of jobs' ends) and
the metrics (which count its deliveries).
"""

from __future__ import annotations

from typing import Final

from zope.interface import Attribute, Interface, implementer

from ..lifecycle import IJobObserver

__all__ = ["DELIVERY_OUTCOMES", "IDeliveryCounts", "INotifier", "NO_DELIVERY_COUNTS"]

#: What became of one attempt or notification (C{outcome} of
#: C{midjobs_webhook_deliveries_total}): C{delivered} (a 2xx answer),
#: C{failed} (an attempt failed, another will come), C{gave_up} (the last
#: attempt failed), C{dropped} (removed unsent: the outbox was full, or its
#: webhook is no longer configured).
DELIVERY_OUTCOMES: Final = ("delivered", "failed", "gave_up", "dropped")


class INotifier(IJobObserver):
    """
    An observer of the job queue (C{JobsQueue.observe}) that queues the
    webhook notifications of each job's end (L{IJobObserver.ended}, once
    its end is recorded, with its final record).
    """

    pending = Attribute("How many notifications wait in the outbox (C{int}), C{None} before it is read.")


class IDeliveryCounts(Interface):
    """
    What counts the notifier's deliveries (the daemon's metrics).
    """

    def webhook_delivery(outcome: str) -> None:
        """
        One attempt or notification ended with C{outcome}, one of L{DELIVERY_OUTCOMES}.
        """


@implementer(IDeliveryCounts)
class _NoDeliveryCounts:
    def webhook_delivery(self, outcome: str) -> None:
        pass


#: Counts nothing (a notifier without metrics).
NO_DELIVERY_COUNTS: Final = _NoDeliveryCounts()
