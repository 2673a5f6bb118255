"""
The scheduling calls of an asyncio event loop, answered by a Twisted reactor.

Code written for the original daemon reaches its event loop as C{job.loop}
to schedule work (C{call_soon_threadsafe} from a thread job, C{call_later}
for a timer).  midjobs has no asyncio loop: the reactor is its loop, and
L{ReactorLoop} gives it those names, so such code runs unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime

if TYPE_CHECKING:

    class _IReactor(IReactorTime, IReactorFromThreads):
        """
        The reactor a L{ReactorLoop} stands for (for the type checker only,
        as Twisted's own C{_IReactorCommon}).
        """

__all__ = ["ReactorLoop"]


class ReactorLoop:
    """
    The reactor under the names of C{asyncio.AbstractEventLoop}'s scheduling
    calls.  A scheduled call is an L{IDelayedCall}, whose C{cancel()} is the
    one a C{TimerHandle} has.
    """

    def __init__(self, reactor: _IReactor) -> None:
        self._reactor = reactor

    def __repr__(self) -> str:
        return f"<ReactorLoop of {self._reactor!r}>"

    def time(self) -> float:
        """
        The reactor's clock, in seconds.
        """
        return float(self._reactor.seconds())

    def call_soon(self, callback: Callable[..., object], *args: object) -> IDelayedCall:
        """
        Call C{callback(*args)} in the reactor's next turn (reactor thread only).
        """
        return self._reactor.callLater(0, callback, *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: object) -> IDelayedCall:
        """
        Call C{callback(*args)} C{delay} seconds from now (reactor thread only).
        """
        return self._reactor.callLater(max(0.0, delay), callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: object) -> IDelayedCall:
        """
        Call C{callback(*args)} at L{time} C{when} (reactor thread only).
        """
        return self.call_later(when - self.time(), callback, *args)

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: object) -> None:
        """
        Call C{callback(*args)} in the reactor thread; safe from any thread.
        """
        self._reactor.callFromThread(callback, *args)
