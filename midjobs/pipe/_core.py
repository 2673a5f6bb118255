"""
The reactor side of a pipe: a bounded byte channel that is an L{IConsumer}
on its writing side and an L{IPushProducer} on its reading side.

Everything here runs in the reactor thread; the thread ends
(L{midjobs.pipe._threads}) reach it through C{blockingCallFromThread}.
"""

from __future__ import annotations

from collections import deque
from enum import Enum, auto
from typing import Any, TypeVar, cast

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IProducer, IPullProducer, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from ._buffer import PipeBuffer
from ._errors import PipeBrokenError, PipeError, as_failure

__all__ = ["PipeCore", "PipeState"]

_T = TypeVar("_T")

class PipeState(Enum):
    """
    Where a pipe is in its life.
    """

    #: The writer may write.
    OPEN = auto()
    #: The writer closed: the reader gets what is buffered, then EOF.
    CLOSED = auto()
    #: The reader went away quietly: what is written is dropped, reads fail.
    DISCARDED = auto()
    #: Aborted: reads and writes raise the reason, nothing more is delivered.
    BROKEN = auto()


@attrs.define
class _Upstream:
    """
    The producer that feeds the pipe, and what the pipe asked of it.
    """

    producer: IProducer
    streaming: bool
    paused: bool = False
    #: A pull producer was asked for more and has not written yet.
    asked: bool = False


@attrs.define
class _Downstream:
    """
    The consumer that the pipe delivers to (L{PipeCore.deliver_to}).
    """

    consumer: IConsumer
    delivered: Deferred[None]
    paused: bool = False
    #: The consumer stopped the pipe: it must not be unregistered from.
    stopped: bool = False


@attrs.define
class _Read:
    """
    A read of up to C{n} bytes: answered with the first bytes there.
    """

    n: int
    answer: Deferred[bytes]

    def ready(self, buffer: PipeBuffer) -> bool:
        return buffer.size > 0

    def fire(self, buffer: PipeBuffer) -> None:
        self.answer.callback(buffer.take(self.n))


@attrs.define
class _Fill:
    """
    A read into C{view}: what arrives goes straight into it, and it is
    answered with how much once C{at_least} bytes are there (or at EOF).
    While it waits the pipe's buffer stays empty, so the writer is never
    held back by it.
    """

    view: memoryview
    at_least: int
    answer: Deferred[int]
    filled: int = 0

    def ready(self, buffer: PipeBuffer) -> bool:
        if buffer.size and self.filled < len(self.view):
            self.filled += buffer.take_into(self.view[self.filled :])
        return self.filled >= self.at_least

    def fire(self, buffer: PipeBuffer) -> None:
        self.answer.callback(self.filled)


def _ignore(failure: Failure) -> None:
    return None


@implementer(IConsumer, IPushProducer)
class PipeCore:
    """
    A flow-controlled byte channel with one writer and one reader, in the
    reactor thread.

    Its writer is a plain L{IConsumer}: L{write} takes the bytes at once;
    a registered push producer is paused when C{high_water} bytes are
    buffered and resumed at C{low_water}, a pull producer is asked for more
    while there is room; L{wait_writable} is the same backpressure for a
    writer that awaits.  Its reader is either L{read} (Deferreds, in order)
    or one consumer that L{deliver_to} writes to as an L{IPushProducer}.

    @ivar high_water: buffered bytes at which the writer is held back.
    @ivar low_water: buffered bytes at or below which it may go on.
    """

    def __init__(self, buffer: PipeBuffer, high_water: int, low_water: int) -> None:
        if not 0 <= low_water < high_water:
            raise ValueError("Pipe needs 0 <= low_water < high_water")
        self.high_water = high_water
        self.low_water = low_water
        self.buffer = buffer
        self.state = PipeState.OPEN
        self.failure: Failure | None = None
        self.upstream: _Upstream | None = None
        self.downstream: _Downstream | None = None
        self._reads: deque[_Read | _Fill] = deque()
        self._writers: list[Deferred[None]] = []
        self._pumping = False
        self._repump = False

    # -- writing side: IConsumer ------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Let C{producer} feed the pipe.  A broken pipe stops it at once.
        """
        if self.upstream is not None:
            raise RuntimeError("A producer is already registered with this pipe")
        if self.state is PipeState.BROKEN:
            producer.stopProducing()
            return
        self.upstream = _Upstream(producer, bool(streaming))
        self._pump()

    def unregisterProducer(self) -> None:
        """
        Forget the producer (without resuming it).
        """
        self.upstream = None

    def write(self, data: bytes) -> None:
        """
        Append C{data}, whatever the level (dropped after L{discard}).

        @raise PipeError: the pipe is closed; or the abort reason if it broke.
        """
        if self.state is PipeState.BROKEN:
            assert self.failure is not None
            self.failure.raiseException()
        if self.state is PipeState.CLOSED:
            raise PipeError("Cannot write to a closed pipe")
        if self.upstream is not None:
            self.upstream.asked = False
        if self.state is PipeState.OPEN:
            self.buffer.append(data)
            self._pump()

    def wait_writable(self) -> Deferred[None]:
        """
        Wait for room.

        @return: a L{Deferred} that fires with L{None} once fewer than
            C{high_water} bytes are buffered (at once if that is so, and
            always at once for a spooled, closed or discarded pipe); it fails
            with the abort reason if the pipe breaks (quietly when nobody
            waits on it any more).
        """
        if self.failure is not None:
            return fail(self.failure)
        if not self._must_wait():
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._writers.remove)
        self._writers.append(waiter)
        return waiter

    @property
    def room(self) -> int:
        """
        How many more bytes the writer may write before it is held back
        (0 once closed, discarded or broken).
        """
        if self.state is not PipeState.OPEN:
            return 0
        return max(0, self.high_water - self.buffer.level)

    def close(self) -> None:
        """
        Mark the end of the data: the reader gets what is buffered, then EOF.
        Closing twice, or closing a broken or discarded pipe, does nothing.
        """
        if self.state is PipeState.OPEN:
            self.state = PipeState.CLOSED
            self._pump()

    def abort(self, reason: BaseException | Failure) -> None:
        """
        Break the pipe: pending and later reads and writes fail with
        C{reason}, the buffer is dropped, a registered producer is stopped and
        a consumer fed by L{deliver_to} is unregistered (its L{Deferred}
        fails).  Does nothing once broken, or once the reader had everything
        up to EOF.
        """
        if self.state is PipeState.BROKEN or self.at_eof:
            return
        self.failure = as_failure(reason)
        self.state = PipeState.BROKEN
        self.buffer.clear()
        self._pump()

    def discard(self) -> None:
        """
        The reader is no longer interested: drop what is buffered and
        everything written from now on, so the writer never waits again.
        Later reads fail with L{PipeError}.
        """
        if self.state in (PipeState.OPEN, PipeState.CLOSED):
            self.state = PipeState.DISCARDED
            self.buffer.clear()
            self._pump()

    # -- reading side -------------------------------------------------------

    @property
    def at_eof(self) -> bool:
        """
        Whether the writer closed and the reader had every byte.
        """
        return self.state is PipeState.CLOSED and not self.buffer.size

    def read(self, n: int = -1) -> Deferred[bytes]:
        """
        Read up to C{n} bytes (C{n < 0}: what is in memory), as soon as there are any.

        @return: a L{Deferred} firing with at least one byte, or with C{b""}
            only at EOF; it fails with the abort reason if the pipe broke,
            and with L{PipeError} if it was discarded.
        """
        if n == 0:
            return succeed(b"")
        answer: Deferred[bytes] = Deferred(self._forget_read)
        return self._wait_for(_Read(n, answer), answer)

    def read_into(self, view: memoryview, at_least: int = 1) -> Deferred[int]:
        """
        Move bytes into C{view} as they arrive, until C{at_least} of them
        (at most C{len(view)}) are there, or EOF.

        @return: a L{Deferred} firing with how many (0 only at EOF), failing
            as L{read} does (what was moved is then lost: never a short read).
        """
        answer: Deferred[int] = Deferred(self._forget_read)
        return self._wait_for(_Fill(view, max(1, min(at_least, len(view))), answer), answer)

    def _wait_for(self, read: _Read | _Fill, answer: Deferred[_T]) -> Deferred[_T]:
        if self.downstream is not None:
            raise PipeError("The pipe is being delivered to a consumer")
        self._reads.append(read)
        self._pump()
        return answer

    def _forget_read(self, answer: Deferred[Any]) -> None:
        self._reads = deque(read for read in self._reads if read.answer is not answer)

    def deliver_to(self, consumer: IConsumer, producer: IPushProducer | None = None) -> Deferred[None]:
        """
        Register C{producer} (by default this pipe) as a streaming producer
        with C{consumer} and write the data to C{consumer} as it arrives.  At
        EOF the consumer is unregistered from.

        @return: a L{Deferred} that fires with L{None} once everything up to
            EOF was written to C{consumer}, or fails with the reason the pipe
            broke (then the transfer was truncated: the consumer must not
            finish it as if it were complete).
        """
        if self.downstream is not None or self._reads:
            raise PipeError("The pipe already has a reader")
        failure = self._read_failure()
        if failure is not None:
            return fail(failure)
        delivered: Deferred[None] = Deferred()
        self.downstream = _Downstream(consumer, delivered)
        consumer.registerProducer(producer if producer is not None else self, True)
        self._pump()
        return delivered

    def pauseProducing(self) -> None:
        """
        Stop writing to the consumer until L{resumeProducing}.
        """
        if self.downstream is not None:
            self.downstream.paused = True

    def resumeProducing(self) -> None:
        """
        Go on writing to the consumer.
        """
        if self.downstream is not None:
            self.downstream.paused = False
            self._pump()

    def stopProducing(self) -> None:
        """
        The consumer went away: break the pipe with L{PipeBrokenError}, so the
        writer's next write raises.
        """
        if self.downstream is not None:
            self.downstream.stopped = True
        self.abort(PipeBrokenError("The reading side of the pipe went away"))

    # -- bringing both sides in line with the buffer ---------------------------

    def _must_wait(self) -> bool:
        return self.state is PipeState.OPEN and self.buffer.level >= self.high_water

    def _read_failure(self) -> Failure | None:
        if self.state is PipeState.DISCARDED:
            return as_failure(PipeError("The pipe was discarded by its reader"))
        return self.failure

    def _pump(self) -> None:
        """
        Bring the producer, the consumer and the waiting Deferreds in line
        with the buffer.  Re-entrant calls (from the callbacks it runs) only
        make it go round once more.
        """
        if self._pumping:
            self._repump = True
            return
        self._pumping = True
        try:
            self._repump = True
            while self._repump:
                self._repump = False
                if self.failure is not None:
                    self._break(self.failure)
                    continue
                self._deliver()
                self._answer_reads()
                if self.at_eof:
                    self.buffer.clear()  # a spool's file goes at once
                self._steer_producer()
                self._release_writers()
        finally:
            self._pumping = False

    def _deliver(self) -> None:
        down = self.downstream
        if down is None:
            return
        while self.downstream is down and not down.paused and self.state is not PipeState.DISCARDED:
            chunk = self.buffer.chunk()
            if not chunk:
                break
            down.consumer.write(chunk)
        if self.downstream is not down:
            return
        failure = self._read_failure()
        if failure is None and not self.at_eof:
            return
        self.downstream = None
        if not down.stopped:
            down.consumer.unregisterProducer()
        if failure is not None:
            down.delivered.errback(failure)
        else:
            down.delivered.callback(None)

    def _answer_reads(self) -> None:
        while self._reads:
            read = self._reads[0]
            failure = self._read_failure()
            if failure is None and not read.ready(self.buffer) and self.state is PipeState.OPEN:
                return
            self._reads.popleft()
            if failure is not None:
                read.answer.errback(failure)
            else:
                read.fire(self.buffer)

    def _steer_producer(self) -> None:
        up = self.upstream
        if up is None:
            return
        level = self.buffer.level if self.state is not PipeState.DISCARDED else 0
        if up.streaming:
            if not up.paused and level >= self.high_water:
                up.paused = True
                cast(IPushProducer, up.producer).pauseProducing()
            elif up.paused and level <= self.low_water:
                up.paused = False
                cast(IPushProducer, up.producer).resumeProducing()
        elif not up.asked and level < self.high_water and self.state is not PipeState.CLOSED:
            up.asked = True
            cast(IPullProducer, up.producer).resumeProducing()

    def _release_writers(self) -> None:
        if self._writers and not self._must_wait():
            writers, self._writers = self._writers, []
            for writer in writers:
                writer.callback(None)

    def _break(self, failure: Failure) -> None:
        up, self.upstream = self.upstream, None
        if up is not None:
            up.producer.stopProducing()
        down, self.downstream = self.downstream, None
        if down is not None and not down.stopped:
            down.consumer.unregisterProducer()
        reads, self._reads = self._reads, deque()
        for read in reads:
            read.answer.errback(failure)
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.errback(failure)
            # An awaiting writer has had the failure by now; one that dropped
            # the Deferred must not get an "Unhandled error" log.
            writer.addErrback(_ignore)
        if down is not None:
            down.delivered.errback(failure)
