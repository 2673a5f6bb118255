"""
Turns for each owner: at most a few of one owner's queries run at once.

A client that sends many slow history queries at once should wait for its
own, not make everyone else wait: L{Slots} gives each owner (a connection)
its own L{DeferredSemaphore}, so the owner's extra queries queue behind each
other, and the store's readers stay free for other owners.  An owner's
semaphore is forgotten when the owner is.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Generic, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore

__all__ = ["Slots"]

_Owner = TypeVar("_Owner")


class Slots(Generic[_Owner]):
    """
    At most C{limit} concurrent runs per owner.

    @ivar limit: how many of one owner's runs may be under way at once.
    """

    def __init__(self, limit: int, on_queued: Callable[[_Owner, int], None] | None = None) -> None:
        """
        @param limit: at least 1.
        @param on_queued: called with the owner and C{limit} when a run of
            that owner has to wait and none of its runs was waiting yet (once
            per burst, for a log line).
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self._on_queued = on_queued
        self._semaphores: weakref.WeakKeyDictionary[_Owner, DeferredSemaphore] = weakref.WeakKeyDictionary()

    def run(self, owner: _Owner, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        Call C{f(*args, **kwargs)} (which may return a Deferred or a
        coroutine) when fewer than L{limit} runs of C{owner} are under way.

        @return: a Deferred firing with C{f}'s result; cancelling it before
            C{f} started drops the run from the queue.
        """
        semaphore = self._semaphores.get(owner)
        if semaphore is None:
            semaphore = self._semaphores[owner] = DeferredSemaphore(self.limit)
        if semaphore.tokens == 0 and not semaphore.waiting and self._on_queued is not None:
            self._on_queued(owner, self.limit)
        return semaphore.run(_call, f, args, kwargs)


def _call(f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = f(*args, **kwargs)
    if hasattr(result, "__await__") and not isinstance(result, Deferred):
        return Deferred.fromCoroutine(result)
    return result
