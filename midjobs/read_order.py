"""
Reads that may come back out of order, applied newest first.

Two reads of one row through a pool of several connections (PostgreSQL's)
can answer in another order than they started: the older answer, arriving
last, would undo what the newer one said.  L{NewestReads} applies a read's
answer only if no read of the same key that started after it was applied.
"""

from __future__ import annotations

import itertools
from typing import Callable, Hashable, TypeVar

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

__all__ = ["NewestReads"]

_T = TypeVar("_T")


@attrs.define
class _Reads:
    #: How many reads of the key are under way.
    under_way: int = 0
    #: The mark of the newest read applied (or of what was learnt otherwise).
    applied: int = -1


class NewestReads:
    """
    The reads of each key under way, and the newest one applied: what is
    kept lasts only as long as a read of its key is under way.
    """

    def __init__(self) -> None:
        self._marks = itertools.count()
        self._keys: dict[Hashable, _Reads] = {}

    def read(
        self, key: Hashable, read: Callable[[], Deferred[_T]], apply: Callable[[_T], Deferred[None] | None]
    ) -> Deferred[None]:
        """
        Start C{read()} of C{key}, and C{apply} its answer unless a read of
        C{key} that started later was applied first (or L{learnt} was told
        meanwhile).  A failed read applies nothing and fails.
        """
        reads = self._keys.setdefault(key, _Reads())
        reads.under_way += 1
        mark = next(self._marks)

        def answered(value: _T) -> Deferred[None] | None:
            self._done(key, reads)
            if mark < reads.applied:
                return None  # Stale: a newer answer is in force.
            reads.applied = mark
            return apply(value)

        def failed(failure: Failure) -> Failure:
            self._done(key, reads)
            return failure

        return maybeDeferred(read).addCallbacks(answered, failed)

    def __len__(self) -> int:
        """
        How many keys have reads under way.
        """
        return len(self._keys)

    def learnt(self, key: Hashable) -> None:
        """
        What C{key} is now was learnt otherwise (this process changed it):
        the reads of it that started before are stale.
        """
        reads = self._keys.get(key)
        if reads is not None:
            reads.applied = next(self._marks)

    def _done(self, key: Hashable, reads: _Reads) -> None:
        reads.under_way -= 1
        if not reads.under_way:
            del self._keys[key]
