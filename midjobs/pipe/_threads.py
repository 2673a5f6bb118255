"""
The blocking ends of a pipe, for jobs that run in a worker thread.

C{pipe.r} is an L{io.BufferedReader} and C{pipe.w} an L{io.BufferedWriter},
each over a raw end whose calls run in the reactor thread with
L{blockingCallFromThread}: the one bridge between a worker thread and a
pipe, whose state lives in the reactor thread only.  A raw read moves as
many bytes as the caller's buffer takes: a 1 MiB C{readinto} is filled as
the data arrives, in one trip, so large transfers cross the bridge in large
blocks.

Called in the reactor thread itself, an end works while it need not wait,
and raises L{RuntimeError} where it would block the reactor.
"""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread
from twisted.python import threadable
from twisted.python.failure import Failure

from ._core import PipeCore, PipeState

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

    from twisted.internet.interfaces import IReactorFromThreads

__all__ = ["PipeReader", "PipeWriter", "call_blocking", "call_soon", "in_reactor_thread"]

_T = TypeVar("_T")

#: The buffer of C{pipe.r} (for C{readline} and small reads; larger reads go
#: straight into the caller's buffer).
READ_BUFFER = 64 * 1024

_READ_BLOCKS = "pipe.r.read() would block the reactor thread; use await pipe.read() there"
_WRITE_BLOCKS = "pipe.w.write() would block the reactor thread; use await pipe.write() there"


def in_reactor_thread() -> bool:
    """
    Whether this is the reactor's thread (the main thread before the reactor runs).
    """
    if threadable.ioThread is None:
        return threading.current_thread() is threading.main_thread()
    return bool(threadable.isInIOThread())


def call_blocking(reactor: IReactorFromThreads, would_block: str, f: Callable[[], Deferred[_T]]) -> _T:
    """
    Run C{f()} in the reactor thread and wait for its L{Deferred}.

    In the reactor thread itself nothing may wait: if the L{Deferred} has not
    fired at once it is cancelled and L{RuntimeError}C{(would_block)} raised.
    """
    if not in_reactor_thread():
        waited: Callable[[], Deferred[_T]] | Callable[[], _T] = f
        return blockingCallFromThread(reactor, waited)
    results: list[_T | Failure] = []
    answer = f()
    answer.addBoth(results.append)
    if not results:
        answer.cancel()
        raise RuntimeError(would_block)
    outcome = results[0]
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome


def call_soon(reactor: IReactorFromThreads, f: Callable[..., object], *args: object) -> None:
    """
    Run C{f(*args)} in the reactor thread: now if this is it, else as soon as it can.
    """
    if in_reactor_thread():
        f(*args)
    else:
        reactor.callFromThread(f, *args)


class _RawReader(io.RawIOBase):
    """
    The reading end of a pipe as a raw file: each call is one trip to the reactor.
    """

    def __init__(self, reactor: IReactorFromThreads, core: PipeCore) -> None:
        super().__init__()
        self._reactor = reactor
        self._core = core

    def __del__(self) -> None:
        # Closed explicitly, or by Pipes.close() when the job ends: never by
        # the garbage collector, in whatever thread it runs.
        pass

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        # A worker's read into a large buffer (the caller's: BufferedReader
        # reads its own small one for lines) is filled in one trip.  Where
        # nothing may wait, it takes what is there.
        at_least = len(view) if len(view) > READ_BUFFER and not in_reactor_thread() else 1
        return call_blocking(self._reactor, _READ_BLOCKS, lambda: self._core.read_into(view, at_least))

    def readall(self) -> bytes:
        chunks = []
        while chunk := call_blocking(self._reactor, _READ_BLOCKS, lambda: self._core.read(-1)):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if not self.closed:
            call_soon(self._reactor, self._core.discard)
        super().close()


class _RawWriter(io.RawIOBase):
    """
    The writing end of a pipe as a raw file: a write waits while the pipe is
    full, then the pipe takes all of it.

    Each answer from the reactor says how much room the pipe had left;
    writes that fit in it are sent on without waiting for an answer (in
    order, as every call from this thread), so a stream of small writes
    costs one trip to the reactor per C{high_water} bytes, not per write.
    A pipe that broke meanwhile raises at the next write that waits.
    """

    def __init__(self, reactor: IReactorFromThreads, core: PipeCore) -> None:
        super().__init__()
        self._reactor = reactor
        self._core = core
        self._room = 0  # the room last reported, less what was sent since

    def __del__(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def write(self, buffer: ReadableBuffer) -> int:
        # A copy: the caller may reuse its buffer once this returns.
        return self.write_bytes(bytes(buffer))

    def write_bytes(self, data: bytes) -> int:
        """
        Write C{data}, which the pipe keeps as it is (bytes do not change).
        """
        if len(data) <= self._room and not in_reactor_thread():
            self._room -= len(data)
            self._reactor.callFromThread(self._write_unanswered, data)
        elif data:
            self._room = call_blocking(self._reactor, _WRITE_BLOCKS, lambda: self._write_when_writable(data))
        return len(data)

    def _write_when_writable(self, data: bytes) -> Deferred[int]:
        return self._core.wait_writable().addCallback(lambda _: self._write_now(data))

    def _write_now(self, data: bytes) -> int:
        self._core.write(data)
        return self._core.room

    def _write_unanswered(self, data: bytes) -> None:
        # Closed or broken since it reported room: the next write that
        # waits for an answer raises; this one goes nowhere.
        if self._core.state in (PipeState.OPEN, PipeState.DISCARDED):
            self._core.write(data)

    def close(self) -> None:
        if not self.closed:
            call_soon(self._reactor, self._core.close)
        super().close()


class PipeReader(io.BufferedReader):
    """
    The blocking reading end of a pipe, for a job in a worker thread.

    Like a buffered file, C{read(n)} and C{readinto(b)} wait for C{n} (or
    C{len(b)}) bytes or EOF, C{read()} and C{readall()} read to EOF, and
    C{readline} and iteration return each line as soon as it is there.
    A broken pipe raises its abort reason, never a short read.  C{close()}
    discards the rest of the stream (L{Pipe.discard}).
    """

    def __init__(self, reactor: IReactorFromThreads, core: PipeCore) -> None:
        super().__init__(_RawReader(reactor, core), READ_BUFFER)

    def __del__(self) -> None:
        pass

    def readall(self) -> bytes:
        """
        Read to EOF.
        """
        return self.read()


class PipeWriter(io.BufferedWriter):
    """
    The blocking writing end of a pipe, for a job in a worker thread.

    C{write} waits while the pipe is full; when it returns, all of the data
    is on its way to the pipe (the buffer is flushed at each write, so
    nothing is held back in the job's thread).  Once the pipe broke, a write
    raises the abort reason (at the latest the first one that has to wait
    for room).  C{close()} marks EOF (L{Pipe.close}).
    """

    def __init__(self, reactor: IReactorFromThreads, core: PipeCore) -> None:
        self._raw_end = _RawWriter(reactor, core)
        super().__init__(self._raw_end)

    def __del__(self) -> None:
        pass

    def write(self, buffer: ReadableBuffer) -> int:
        if type(buffer) is bytes and len(buffer) > io.DEFAULT_BUFFER_SIZE:
            self.flush()  # (and ValueError once closed)
            return self._raw_end.write_bytes(buffer)  # without a copy
        written = super().write(buffer)
        self.flush()
        return written
