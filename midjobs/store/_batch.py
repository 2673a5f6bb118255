"""
Group commit: many writes, one transaction.

A L{WriteBatch} collects writes keyed by what they write (a job id), keeps
only the newest value of each key, and hands them to a write function in one
go.  At most one write is in flight; whatever arrives meanwhile waits for it
and goes out next, together.  A durable write (one the caller waits for) is
flushed as soon as the reactor has handled the events at hand, so the writes
of jobs created in the same burst share a transaction; other writes wait up
to C{interval} seconds, so a burst of progress events costs one write.  Who
makes a durable write is told it is durable by a Deferred (L{WriteBatch.add})
or, for less work on the reactor thread, by a plain call
(L{WriteBatch.add_durable}).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Hashable

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from ..logs import logger
from ._interfaces import StoreClosed, Written

__all__ = ["WriteBatch"]

log = logger(__name__)


class WriteBatch:
    """
    Pending writes, flushed together by C{write(values)}.

    @param write: called on the reactor thread with the pending values in
        the order their keys were first written; returns a Deferred that
        fires once they are durable.
    @param interval: how long a write nobody waits for may wait.
    """

    def __init__(
        self, reactor: Any, write: Callable[[list[Any]], Deferred[None]], interval: float = 0.2
    ) -> None:
        self._reactor = reactor
        self._write = write
        self.interval = interval
        self._pending: dict[Hashable, Any] = {}
        #: Who is told once the pending durable writes are, in the order they were made.
        self._waiters: list[Written] = []
        self._in_flight: Deferred[None] | None = None
        self._call: IDelayedCall | None = None
        self._call_soon = False
        self._closed = False
        #: Inside C{write}: a write that is durable at once must not flush again from within it.
        self._writing = False
        #: How many flushes and how many values went out (for tests and benchmarks).
        self.flushes = 0
        self.written = 0
        #: Called with the seconds each write took, from its start until it
        #: was durable or failed (the daemon's metrics), if set.
        self.on_commit: Callable[[float], None] | None = None

    def pending(self, key: Hashable) -> Any:
        """
        The value waiting to be written for C{key}, or C{None}.
        """
        return self._pending.get(key)

    def add(self, key: Hashable, value: Any, durable: bool) -> Deferred[None] | None:
        """
        Write C{value} for C{key}, replacing any value still pending for it.

        @return: for a durable write, a Deferred that fires once it (and
            everything written before it) is durable, or fails with the
            write's error; otherwise C{None}.
        """
        if self._closed:
            return fail(StoreClosed("The job store is closed")) if durable else None
        if not durable:
            self._pending[key] = value
            self._schedule(self.interval)
            return None
        d: Deferred[None] = Deferred()
        self.add_durable(key, value, functools.partial(_fire, d))
        return d

    def add_durable(self, key: Hashable, value: Any, written: Written) -> None:
        """
        Write C{value} for C{key}, replacing any value still pending for it,
        and call C{written} once it (and everything written before it) is
        durable, or failed: a durable write without a Deferred of its own.

        C{written} is called on the reactor thread, in the order the writes
        were made, and never from within this call: a closed batch refuses
        the write (L{StoreClosed}) on the next turn of the reactor.
        """
        if self._closed:
            refused = Failure(StoreClosed("The job store is closed"))  # type: ignore[no-untyped-call]  # not annotated in Twisted
            self._reactor.callLater(0, written, refused)
            return
        self._pending[key] = value
        self._waiters.append(written)
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if self._in_flight is not None:
            return  # The end of the write in flight schedules the next one.
        if self._call is not None:
            if delay or self._call_soon:
                return
            self._call.cancel()
        self._call_soon = not delay
        self._call = self._reactor.callLater(delay, self._flush)

    def _flush(self) -> None:
        self._call = None
        if not self._pending:
            return
        values = list(self._pending.values())
        waiters, self._waiters = self._waiters, []
        self._pending = {}
        self.flushes += 1
        self.written += len(values)
        self._writing = True
        try:
            started = self._reactor.seconds()
            self._in_flight = in_flight = maybeDeferred(self._write, values)
            in_flight.addBoth(self._flushed, waiters, len(values), started)
        finally:
            self._writing = False

    def _flushed(self, result: Any, waiters: list[Written], count: int, started: float) -> None:
        if self.on_commit is not None:
            self.on_commit(self._reactor.seconds() - started)
        # Still in flight while its waiters run: what they write goes out next, together.
        failure = result if isinstance(result, Failure) else None
        if failure is not None:
            log.failure("{count} job record(s) could not be written", failure, count=count)
        for written in waiters:
            try:
                written(failure)
            except Exception:
                # One who failed to hear of it keeps neither the others nor the next writes from going on.
                log.failure("Telling of {count} written job record(s) failed", count=count)
        self._in_flight = None
        if self._waiters and not self._writing:
            self._flush()
        elif self._pending:
            # Written at once: the next write waits for the next turn, not deeper in this stack.
            self._schedule(0 if self._waiters else self.interval)

    def close(self) -> Deferred[None]:
        """
        Refuse new writes, write what is pending, and fire when nothing is left.
        """
        self._closed = True
        if self._call is not None:
            self._call.cancel()
            self._call = None
        return self._drain()

    def _drain(self) -> Deferred[None]:
        if self._in_flight is not None:
            done: Deferred[None] = Deferred()
            self._in_flight.addBoth(lambda _: done.callback(None))
            return done.addCallback(lambda _: self._drain())
        if self._pending:
            self._flush()
            return self._drain()
        return succeed(None)


def _fire(d: Deferred[None], failure: Failure | None) -> None:
    """
    Fire C{d}, the Deferred of a durable write, as L{Written} is told.
    """
    if failure is None:
        d.callback(None)
    else:
        d.errback(failure)
