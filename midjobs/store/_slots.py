"""
Turns for each owner: at most a few of one owner's queries run at once.

A client that sends many slow history queries at once should wait for its
own, not make everyone else wait: L{Slots} gives each owner (a user, by a
stable identity) its own L{DeferredSemaphore}, so the owner's extra queries
queue behind each other, and the store's readers stay free for other owners.
An owner's semaphore exists only while some of its runs are under way or
waiting.
"""

from __future__ import annotations

from typing import Callable, Coroutine, Generic, Hashable, ParamSpec, TypeVar, Union

from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred

__all__ = ["Slots"]

_Owner = TypeVar("_Owner", bound=Hashable)
_P = ParamSpec("_P")
_T = TypeVar("_T")

#: What a run calls: a function that returns a Deferred or a coroutine.
_Run = Callable[_P, Union[Deferred[_T], Coroutine[Deferred[object], object, _T]]]


class Slots(Generic[_Owner]):
    """
    At most C{limit} concurrent runs per owner.

    @ivar limit: how many of one owner's runs may be under way at once.
    """

    def __init__(self, limit: int) -> None:
        """
        @param limit: at least 1.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self._semaphores: dict[_Owner, DeferredSemaphore] = {}

    def full(self, owner: _Owner) -> bool:
        """
        Whether a run of C{owner} would have to wait now.
        """
        semaphore = self._semaphores.get(owner)
        return semaphore is not None and semaphore.tokens == 0

    def waiting(self, owner: _Owner) -> int:
        """
        How many runs of C{owner} wait for their turn.
        """
        semaphore = self._semaphores.get(owner)
        return len(semaphore.waiting) if semaphore is not None else 0

    def run(
        self, owner: _Owner, f: _Run[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> Deferred[_T]:
        """
        Call C{f(*args, **kwargs)} (which may return a Deferred or a
        coroutine) when fewer than L{limit} runs of C{owner} are under way.

        @return: a Deferred firing with C{f}'s result; cancelling it before
            C{f} started drops the run from the queue.
        """
        semaphore = self._semaphores.get(owner)
        if semaphore is None:
            semaphore = self._semaphores[owner] = DeferredSemaphore(self.limit)
        def start() -> Deferred[_T]:
            return ensureDeferred(f(*args, **kwargs))

        d = semaphore.run(start)
        d.addBoth(self._forget_if_idle, owner, semaphore)
        return d

    def _forget_if_idle(self, result: object, owner: _Owner, semaphore: DeferredSemaphore) -> object:
        if semaphore.tokens == self.limit and not semaphore.waiting and self._semaphores.get(owner) is semaphore:
            del self._semaphores[owner]
        return result
