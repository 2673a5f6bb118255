"""
L{NewestReads}: answers that come back out of order are applied newest first.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred

from midjobs.read_order import NewestReads


class Store:
    """
    Reads that the test answers, in the order it chooses, and what was applied.
    """

    def __init__(self) -> None:
        self.newest = NewestReads()
        self.started: list[Deferred[str]] = []
        self.applied: list[str] = []

    def read(self, key: str) -> Deferred[None]:
        def start() -> Deferred[str]:
            self.started.append(Deferred())
            return self.started[-1]

        return self.newest.read(key, start, self.applied.append)


def test_an_older_answer_arriving_last_is_not_applied() -> None:
    store = Store()
    done = [store.read("alice"), store.read("alice"), store.read("bob")]
    store.started[1].callback("locked")
    store.started[0].callback("unlocked")
    store.started[2].callback("bob's")
    assert store.applied == ["locked", "bob's"]
    assert all(d.called for d in done)
    # Nothing is kept once no read is under way.
    assert len(store.newest) == 0


def test_in_order_answers_are_applied_and_a_failure_applies_nothing() -> None:
    store = Store()
    first, failing, last = store.read("alice"), store.read("alice"), store.read("alice")
    store.started[0].callback("one")
    store.started[1].errback(RuntimeError("gone"))
    store.started[2].callback("three")
    assert store.applied == ["one", "three"]
    assert first.called and last.called
    with pytest.raises(RuntimeError):
        failing.result.raiseException()
    failing.addErrback(lambda _: None)
    assert len(store.newest) == 0


def test_what_was_learnt_otherwise_makes_earlier_reads_stale() -> None:
    store = Store()
    store.read("alice")
    store.newest.learnt("alice")
    store.read("alice")
    store.started[0].callback("before")
    store.started[1].callback("after")
    assert store.applied == ["after"]
