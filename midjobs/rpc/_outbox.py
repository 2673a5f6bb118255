"""
The outbox of one WebSocket connection: everything it sends, in order,
held while its transport is paused, and bounded.

The outbox is the transport's push producer (C{transport.registerProducer(
outbox, True)}, as a download registers its pipe): when the transport's
buffer fills, it stops writing and queues; when the transport drains, it
writes what waits, in order.  While it waits:

  - a C{changed} event is dropped when a newer C{changed} event about the
    same object (collection and id) is queued after it: the newer carries
    the whole record.  The newer takes its place at the end, so an
    C{added} stays before the C{changed} that follows it;
  - a response is never dropped, and is a barrier: no event queued before
    it gives way to one queued after it, so a client never reads an answer
    before an event that the daemon sent before that answer (a new-style
    job's answer after the event that names its request id);
  - past C{limit} bytes queued, responses and events alike, the outbox
    closes: it drops what it holds, takes nothing more, and tells its
    owner, who closes the connection.

So a client that never reads costs at most C{limit} bytes here (and the
transport's own buffer, which holds what was written before it paused).
"""

from __future__ import annotations

from collections import deque
from enum import Enum, auto
from typing import Callable, Hashable

import attrs
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from ..events import Notification
from ._jsonrpc import COLLECTION_UPDATES

__all__ = ["Outbox", "OutboxState"]

#: Dropped entries tolerated in the queue before it is compacted.
_MIN_COMPACT = 64


class OutboxState(Enum):
    """
    Where an L{Outbox} is.
    """

    #: The transport takes what is sent: it is written at once.
    WRITING = auto()
    #: The transport asked for a pause: what is sent is queued.
    PAUSED = auto()
    #: Past the limit, or the connection is gone: what is sent is dropped.
    CLOSED = auto()


@attrs.define(eq=False)
class _Entry:
    """
    One queued message; C{payload} is C{None} once a newer one replaced it.
    """

    payload: bytes | None
    merge_key: Hashable | None


@implementer(IPushProducer)
class Outbox:
    """
    What one connection sends, flow-controlled by its transport.

    @ivar state: an L{OutboxState}.
    @ivar queued_bytes: the bytes of the messages waiting now.
    @ivar limit: the most bytes that may wait (C{[limits] event_queue}).
    """

    def __init__(self, write: Callable[[bytes], None], limit: int, overflowed: Callable[[int], None]) -> None:
        """
        @param write: sends one message on the connection.
        @param limit: the most bytes that may wait.
        @param overflowed: called once, with the bytes that would have been
            queued, when that is more than C{limit}; the outbox is closed by then.
        """
        self._write = write
        self._overflowed = overflowed
        self.limit = limit
        self.state = OutboxState.WRITING
        self.queued_bytes = 0
        self._queue: deque[_Entry] = deque()
        #: The newest queued C{changed} event of each object, since the last response.
        self._latest: dict[Hashable, _Entry] = {}
        self._dropped = 0

    def send_response(self, payload: bytes) -> None:
        """
        Send an answer: never dropped but past the limit, and nothing queued
        before it is merged with what comes after.
        """
        if self.state is OutboxState.CLOSED:
            return
        if self.state is OutboxState.WRITING and not self._queue:
            self._write(payload)
            return
        self._latest.clear()
        self._enqueue(_Entry(payload, None))

    def send_event(self, notification: Notification) -> None:
        """
        Send an event; while paused, a newer C{changed} about the same
        object replaces a queued one.
        """
        if self.state is OutboxState.CLOSED:
            return
        payload = notification.encode(COLLECTION_UPDATES)
        if self.state is OutboxState.WRITING and not self._queue:
            self._write(payload)
            return
        key = notification.merge_key
        entry = _Entry(payload, key)
        if key is not None:
            older = self._latest.get(key)
            if older is not None and older.payload is not None:
                self.queued_bytes -= len(older.payload)
                older.payload = None
                self._dropped += 1
            self._latest[key] = entry
        self._enqueue(entry)

    def _enqueue(self, entry: _Entry) -> None:
        assert entry.payload is not None
        self._queue.append(entry)
        self.queued_bytes += len(entry.payload)
        if self.queued_bytes > self.limit:
            queued = self.queued_bytes
            self._close()
            self._overflowed(queued)
            return
        if self._dropped > _MIN_COMPACT and self._dropped * 2 > len(self._queue):
            self._queue = deque(e for e in self._queue if e.payload is not None)
            self._dropped = 0

    def _close(self) -> None:
        self.state = OutboxState.CLOSED
        self._queue.clear()
        self._latest.clear()
        self.queued_bytes = 0
        self._dropped = 0

    # IPushProducer: the transport's calls.

    def pauseProducing(self) -> None:
        if self.state is OutboxState.WRITING:
            self.state = OutboxState.PAUSED

    def resumeProducing(self) -> None:
        """
        Write what waits, in order, until the transport pauses again.
        """
        if self.state is not OutboxState.PAUSED:
            return
        self.state = OutboxState.WRITING
        queue = self._queue
        while queue and self.state is OutboxState.WRITING:
            entry = queue.popleft()
            payload = entry.payload
            if payload is None:
                self._dropped -= 1
                continue
            self.queued_bytes -= len(payload)
            if entry.merge_key is not None and self._latest.get(entry.merge_key) is entry:
                del self._latest[entry.merge_key]
            self._write(payload)

    def stopProducing(self) -> None:
        """
        The connection is gone: drop what waits.
        """
        self._close()
