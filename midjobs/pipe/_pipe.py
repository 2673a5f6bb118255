"""
L{Pipe}: what a job and the HTTP layer hold of one pipe.

The bytes live in a L{midjobs.pipe._buffer} strategy (memory, or a spool for
a buffered pipe); the flow control in a L{PipeCore} in the reactor thread;
the blocking file objects C{pipe.r} and C{pipe.w} in L{midjobs.pipe._threads}.
A L{Pipe} puts them together under the API jobs use: C{await pipe.read(n)},
C{await pipe.write(data)}, C{pipe.r}, C{pipe.w}, L{Pipe.deliver_to}.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from ._buffer import MemoryBuffer, PipeBuffer, SpoolBuffer
from ._core import PipeCore, PipeState, _Upstream
from ._threads import PipeReader, PipeWriter, call_soon, in_reactor_thread

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorFromThreads

__all__ = ["Pipe"]


def _check_reactor_thread(method: str, instead: str | None = None) -> None:
    if not in_reactor_thread():
        hint = f"; use {instead} in a worker thread" if instead else ""
        raise RuntimeError(f"Pipe.{method}() must be called in the reactor thread{hint}")


@implementer(IConsumer, IPushProducer)
class Pipe:
    """
    A flow-controlled byte channel with one writer and one reader.

    Its writing side is an L{IConsumer}: an upload registers the connection
    as its producer (paused at C{high_water}, resumed at C{low_water}), or
    awaits each L{write}.  Its reading side is an L{IPushProducer}: a
    download hands it to the response with L{deliver_to}, and a slow client
    pauses it, which fills it, which holds the writer back.  L{read},
    L{write}, L{deliver_to} and the producer methods run in the reactor
    thread; L{close}, L{abort} and L{discard} anywhere.

    A pipe never ends in a way that looks like a short file: L{abort} makes
    every pending and later read and write raise the reason, and C{b""} is
    read only after the writer called L{close}.

    @ivar reactor: the reactor the pipe lives in.
    @ivar filename: the name an uploaded file part carried, or L{None}.
    @ivar content_type: the media type an uploaded file part carried, or L{None}.
    @ivar buffered: whether the pipe spools to a temporary file: then the
        writer never waits and a reader may start at any time.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads | None = None,
        *,
        buffered: bool = False,
        high_water: int = 256 * 1024,
        low_water: int = 64 * 1024,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor  # type: ignore[assignment]  # the global reactor provides it
        assert reactor is not None
        buffer: PipeBuffer = SpoolBuffer() if buffered else MemoryBuffer()
        self._core = PipeCore(buffer, high_water, low_water)
        self.reactor: IReactorFromThreads = reactor
        self.filename = filename
        self.content_type = content_type
        self.buffered = buffered

    def __repr__(self) -> str:
        state = self._core.state.name.lower()
        name = f" {self.filename!r}" if self.filename else ""
        return f"<{'buffered ' if self.buffered else ''}Pipe{name} {state}>"

    @property
    def high_water(self) -> int:
        """
        Buffered bytes at which the writer is held back.
        """
        return self._core.high_water

    @property
    def low_water(self) -> int:
        """
        Buffered bytes at or below which it may go on.
        """
        return self._core.low_water

    @property
    def failure(self) -> Failure | None:
        """
        Why the pipe broke, or L{None} while it has not.
        """
        return self._core.failure

    @cached_property
    def r(self) -> PipeReader:
        """
        The blocking file-like reader, for thread jobs.
        """
        return PipeReader(self.reactor, self._core)

    @cached_property
    def w(self) -> PipeWriter:
        """
        The blocking file-like writer, for thread jobs.
        """
        return PipeWriter(self.reactor, self._core)

    # -- writing side -----------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Let C{producer} feed the pipe: a push producer is paused at high water
        and resumed at low water; a pull producer is asked for more while
        there is room.  A broken pipe stops the producer at once.
        """
        _check_reactor_thread("registerProducer")
        self._core.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """
        Forget the producer (without resuming it).
        """
        self._core.unregisterProducer()

    # IConsumer.write returns None: this one also returns the backpressure,
    # which IConsumer callers ignore (PipeCore.write is the plain one).
    def write(self, data: bytes) -> Deferred[None]:  # type: ignore[override]
        """
        Append C{data} at once.

        @return: a L{Deferred} that fires with L{None} when fewer than
            C{high_water} bytes are buffered (at once if that is already so,
            and always at once for a buffered or discarded pipe).  If the
            pipe breaks meanwhile it fails for a caller already waiting on
            it; one nobody waits on fires with L{None} instead of logging an
            unhandled error, so L{IConsumer} callers may ignore it (the next
            write raises).
        @raise PipeError: the pipe is closed; or the abort reason if it broke.
        """
        _check_reactor_thread("write", "pipe.w.write()")
        self._core.write(data if type(data) is bytes else bytes(data))
        return self._core.wait_writable()

    def close(self) -> Deferred[None]:
        """
        Mark the end of the data: the reader gets what is buffered, then EOF.
        Closing twice, or closing a broken pipe, does nothing.

        @return: a L{Deferred} already fired with L{None}; it does not wait for
            the reader (who may be a download that starts after the job ends).
        """
        call_soon(self.reactor, self._core.close)
        return succeed(None)

    def abort(self, reason: BaseException | Failure) -> None:
        """
        Break the pipe: pending and later reads and writes raise C{reason},
        the buffer is dropped, a registered producer gets C{stopProducing()}
        and a consumer fed by L{deliver_to} is unregistered (its L{Deferred}
        fails).  It does nothing once the pipe is already broken, or once
        the reader has consumed everything up to EOF.
        """
        call_soon(self.reactor, self._core.abort, reason)

    def discard(self) -> None:
        """
        The reader is no longer interested: drop what is buffered and
        everything written from now on, so the writer never waits again.
        Later reads raise L{PipeError}.
        """
        call_soon(self.reactor, self._core.discard)

    # -- reading side -----------------------------------------------------------

    def read(self, n: int = -1) -> Deferred[bytes]:
        """
        Read up to C{n} bytes, as soon as there are any.

        C{n < 0} returns everything buffered (a buffered pipe returns at most
        one spool block, 256 KiB).  C{n == 0} returns C{b""} at once.

        @return: a L{Deferred} firing with at least one byte, or with C{b""}
            only at EOF after L{close}; it fails with the abort reason if the
            pipe broke, and with L{PipeError} if the pipe was discarded.
        """
        _check_reactor_thread("read", "pipe.r.read()")
        if n == 0:
            return succeed(b"")
        return self._core.read(n)

    def deliver_to(self, consumer: IConsumer) -> Deferred[None]:
        """
        Register the pipe as a streaming producer with C{consumer} and write
        the data to it as it arrives.  At EOF the pipe unregisters itself.

        @return: a L{Deferred} that fires with L{None} once everything up to
            EOF was written to C{consumer}, or fails with the reason the pipe
            broke (then the transfer was truncated: the consumer must not
            finish it as if it were complete).
        """
        _check_reactor_thread("deliver_to")
        return self._core.deliver_to(consumer, self)

    def pauseProducing(self) -> None:
        """
        Stop writing to the consumer until L{resumeProducing}.
        """
        self._core.pauseProducing()

    def resumeProducing(self) -> None:
        """
        Go on writing to the consumer.
        """
        self._core.resumeProducing()

    def stopProducing(self) -> None:
        """
        The consumer went away: break the pipe with L{PipeBrokenError}, so the
        writer's next write raises.
        """
        self._core.stopProducing()

    # -- observing it ---------------------------------------------------------------

    @property
    def state(self) -> PipeState:
        """
        Open, closed by its writer, discarded by its reader, or broken.
        """
        return self._core.state

    @property
    def in_memory(self) -> int:
        """
        Bytes held in memory now (a spooled pipe holds at most one block).
        """
        return self._core.buffer.in_memory

    @property
    def holds_spool(self) -> bool:
        """
        Whether a spool file is open now (until its last block is read).
        """
        buffer = self._core.buffer
        return isinstance(buffer, SpoolBuffer) and buffer.file is not None

    @property
    def producer(self) -> IProducer | None:
        """
        The producer feeding the pipe, if one is registered.
        """
        upstream: _Upstream | None = self._core.upstream
        return upstream.producer if upstream is not None else None

    @property
    def delivery_paused(self) -> bool:
        """
        Whether the consumer given to L{deliver_to} has paused the pipe.
        """
        return self._core.downstream is not None and self._core.downstream.paused
