"""
Pipes: flow-controlled byte channels between an HTTP connection and a job.

A L{Pipe} is a bounded buffer.  Its writing side is an L{IConsumer}: an
upload registers the HTTP connection as its producer, and the pipe pauses
the connection when C{high_water} bytes are buffered and resumes it once the
reader has drained the buffer to C{low_water}.  Its reading side is an
L{IPushProducer}: a download hands the pipe to the HTTP response with
L{Pipe.deliver_to}, and a slow client pauses the pipe, which fills, which
makes the job's writes wait.

Async jobs use C{await pipe.read(n)} / C{await pipe.write(data)}; thread jobs
use the file-like C{pipe.r} / C{pipe.w}, which block only their own thread.
Everything that touches a registered producer or consumer, or fires a
L{Deferred}, happens in the reactor thread.

A pipe never ends in a way that looks like a short file: L{Pipe.abort}
makes every pending and later read and write raise the reason, and
C{b""} is returned only after the writer called L{Pipe.close}.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.python import threadable
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorFromThreads

__all__ = [
    "InputPipes",
    "Pipe",
    "PipeBrokenError",
    "PipeError",
    "PipeReader",
    "PipeWriter",
    "Pipes",
]

#: How much of a buffered (spooled) pipe is read back from disk at once.
_SPOOL_BLOCK = 256 * 1024


class PipeError(Exception):
    """
    A pipe was used in a way its state does not allow (written after
    close, read after its reader discarded it, given two readers).
    """


class PipeBrokenError(PipeError):
    """
    The other side of the pipe went away before the transfer ended.
    """


def _in_reactor_thread() -> bool:
    if threadable.ioThread is None:
        # The reactor has not run yet: it will run in the main thread.
        return threading.current_thread() is threading.main_thread()
    return threadable.isInIOThread()


def _ignore(result: object) -> None:
    return None


@implementer(IConsumer, IPushProducer)
class Pipe:
    """
    A flow-controlled byte channel with one writer and one reader.

    @ivar filename: the name an uploaded file part carried, or L{None}.
    @ivar content_type: the media type an uploaded file part carried, or L{None}.
    @ivar buffered: whether the pipe spools to a temporary file: then the
        writer never waits and a reader may start at any time.
    @ivar high_water: buffered bytes at which the writer is held back.
    @ivar low_water: buffered bytes at or below which it may go on.
    @ivar r: the blocking file-like reader, for thread jobs.
    @ivar w: the blocking file-like writer, for thread jobs.
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
        if not 0 <= low_water < high_water:
            raise ValueError("Pipe needs 0 <= low_water < high_water")
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor  # type: ignore[assignment]
        self._reactor: Any = reactor
        self.filename = filename
        self.content_type = content_type
        self.buffered = buffered
        self.high_water = high_water
        self.low_water = low_water

        # Shared between the reactor thread and one worker thread: only
        # touched with _lock held.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of _chunks[0] already read
        self._mem = 0  # unread bytes in _chunks
        self._spool = tempfile.TemporaryFile(buffering=0) if buffered else None
        self._spooled = 0  # bytes written to the spool
        self._unspooled = 0  # bytes moved from the spool to _chunks
        self._eof = False  # the writer closed
        self._discarded = False  # the reader went away quietly
        self._failure: Failure | None = None
        self._pump_scheduled = False

        # Reactor thread only.
        self._producer: IProducer | None = None
        self._streaming = False
        self._producer_paused = False
        self._pull_requested = False
        self._consumer: IConsumer | None = None
        self._consumer_paused = False
        self._consumer_stopped = False
        self._delivered: Deferred[None] | None = None
        self._reads: deque[tuple[int, Deferred[bytes]]] = deque()
        self._write_waiters: list[Deferred[None]] = []
        self._pumping = False
        self._repump = False

        self.r = PipeReader(self)
        self.w = PipeWriter(self)

    def __repr__(self) -> str:
        state = "broken" if self._failure else "closed" if self._eof else "open"
        name = f" {self.filename!r}" if self.filename else ""
        return f"<{'buffered ' if self.buffered else ''}Pipe{name} {state}>"

    @property
    def failure(self) -> Failure | None:
        """
        Why the pipe broke, or L{None} while it has not.
        """
        return self._failure

    # -- writing side: IConsumer ------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Let C{producer} feed the pipe: a push producer is paused at high water
        and resumed at low water; a pull producer is asked for more while
        there is room.  A broken pipe stops the producer at once.
        """
        self._check_reactor_thread("registerProducer")
        if self._producer is not None:
            raise RuntimeError("A producer is already registered with this pipe")
        if self._failure is not None:
            producer.stopProducing()
            return
        self._producer = producer
        self._streaming = bool(streaming)
        self._producer_paused = False
        self._pull_requested = False
        self._pump()

    def unregisterProducer(self) -> None:
        """
        Forget the producer (without resuming it).
        """
        self._producer = None

    def write(self, data: bytes) -> Deferred[None]:
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
        self._check_reactor_thread("write", "pipe.w.write()")
        if not isinstance(data, bytes):
            data = bytes(data)
        with self._lock:
            self._check_writable()
            self._append(data)
        self._pull_requested = False
        self._pump()
        with self._lock:
            wait = self._must_wait()
        if not wait:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._forget_writer)
        self._write_waiters.append(waiter)
        return waiter

    def close(self) -> Deferred[None]:
        """
        Mark the end of the data: the reader gets what is buffered, then EOF.

        Safe from any thread.  Closing twice, or closing a broken pipe, does
        nothing.

        @return: a L{Deferred} already fired with L{None}; it does not wait for
            the reader (who may be a download that starts after the job ends).
        """
        self._close_writer()
        return succeed(None)

    def abort(self, reason: BaseException | Failure) -> None:
        """
        Break the pipe: pending and later reads and writes raise C{reason},
        the buffer is dropped, a registered producer gets C{stopProducing()}
        and a consumer fed by L{deliver_to} is unregistered (its L{Deferred}
        fails).  Safe from any thread.  It does nothing once the pipe is
        already broken, or once the reader has consumed everything up to EOF.
        """
        failure = reason if isinstance(reason, Failure) else Failure(reason)
        with self._lock:
            if self._failure is not None or self._complete():
                return
            self._failure = failure
            self._drop_buffer()
            self._cond.notify_all()
        self._kick()

    def discard(self) -> None:
        """
        The reader is no longer interested: drop what is buffered and
        everything written from now on, so the writer never waits again.
        Later reads raise L{PipeError}.  Safe from any thread.
        """
        with self._lock:
            if self._discarded:
                return
            self._discarded = True
            self._drop_buffer()
            self._cond.notify_all()
        self._kick()

    # -- reading side: IPushProducer --------------------------------------

    def deliver_to(self, consumer: IConsumer) -> Deferred[None]:
        """
        Register the pipe as a streaming producer with C{consumer} and write
        the data to it as it arrives.  At EOF the pipe unregisters itself.

        @return: a L{Deferred} that fires with L{None} once everything up to
            EOF was written to C{consumer}, or fails with the reason the pipe
            broke (then the transfer was truncated: the consumer must not
            finish it as if it were complete).
        """
        self._check_reactor_thread("deliver_to")
        if self._consumer is not None or self._reads:
            raise PipeError("The pipe already has a reader")
        with self._lock:
            failure = self._read_failure()
        if failure is not None:
            return fail(failure)
        delivered: Deferred[None] = Deferred()
        self._consumer = consumer
        self._consumer_paused = False
        self._consumer_stopped = False
        self._delivered = delivered
        consumer.registerProducer(self, True)
        self._pump()
        return delivered

    def pauseProducing(self) -> None:
        """
        Stop writing to the consumer until L{resumeProducing}.
        """
        self._consumer_paused = True

    def resumeProducing(self) -> None:
        """
        Go on writing to the consumer.
        """
        self._consumer_paused = False
        self._pump()

    def stopProducing(self) -> None:
        """
        The consumer went away: break the pipe with L{PipeBrokenError}, so the
        writer's next write raises.
        """
        self._consumer_stopped = True
        self.abort(PipeBrokenError("The reading side of the pipe went away"))

    # -- reading side: async ----------------------------------------------

    def read(self, n: int = -1) -> Deferred[bytes]:
        """
        Read up to C{n} bytes, as soon as there are any.

        C{n < 0} returns everything buffered (a buffered pipe returns at most
        one spool block, 256 KiB).  C{n == 0} returns C{b""} at once.

        @return: a L{Deferred} firing with at least one byte, or with C{b""}
            only at EOF after L{close}; it fails with the abort reason if the
            pipe broke, and with L{PipeError} if the pipe was discarded.
        """
        self._check_reactor_thread("read", "pipe.r.read()")
        if self._consumer is not None:
            raise PipeError("The pipe is being delivered to a consumer")
        if n == 0:
            return succeed(b"")
        if not self._reads:
            with self._lock:
                result = self._try_read(n)
            if result is not None:
                self._pump()
                return fail(result) if isinstance(result, Failure) else succeed(result)
        reading: Deferred[bytes] = Deferred(self._forget_reader)
        self._reads.append((n, reading))
        return reading

    # -- thread API (used by PipeReader and PipeWriter) ----------------------

    def _blocking_read(self, n: int, fill: bool) -> bytes:
        """
        Up to C{n} bytes (all until EOF for C{n < 0}); with C{fill}, wait
        until there are C{n} or EOF, else return what is there.
        """
        pieces = []
        remaining = n
        with self._lock:
            try:
                while remaining:
                    self._wait_readable()
                    if not self._mem:
                        break
                    piece = self._take(remaining)
                    pieces.append(piece)
                    if remaining > 0:
                        remaining -= len(piece)
                    if not fill:
                        break
            finally:
                self._notify_reactor_locked()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _blocking_readinto(self, view: memoryview) -> int:
        with self._lock:
            try:
                self._wait_readable()
                return self._take_into(view)
            finally:
                self._notify_reactor_locked()

    def _blocking_readline(self, limit: int) -> bytes:
        pieces = []
        remaining = limit
        with self._lock:
            try:
                while remaining:
                    self._wait_readable()
                    if not self._mem:
                        break
                    chunk, head = self._chunks[0], self._head
                    end = len(chunk) if remaining < 0 else min(len(chunk), head + remaining)
                    newline = chunk.find(b"\n", head, end)
                    piece = self._take((newline + 1 if newline >= 0 else end) - head)
                    pieces.append(piece)
                    if remaining > 0:
                        remaining -= len(piece)
                    if newline >= 0:
                        break
            finally:
                self._notify_reactor_locked()
        return b"".join(pieces)

    def _blocking_write(self, data: bytes) -> None:
        with self._lock:
            while True:
                self._check_writable()
                if not self._must_wait():
                    break
                self._block("pipe.w.write()", "await pipe.write()")
            self._append(data)
            self._notify_reactor_locked()

    def _close_writer(self) -> None:
        with self._lock:
            if self._eof or self._failure is not None:
                return
            self._eof = True
            self._release_spool_if_done()
            self._cond.notify_all()
        self._kick()

    # -- state, with _lock held ---------------------------------------------

    def _complete(self) -> bool:
        return self._eof and self._available() == 0

    def _available(self) -> int:
        return self._mem + self._spooled - self._unspooled

    def _must_wait(self) -> bool:
        return (
            self._spool is None
            and not self._discarded
            and not self._eof
            and self._failure is None
            and self._mem >= self.high_water
        )

    def _check_writable(self) -> None:
        if self._failure is not None:
            self._failure.raiseException()
        if self._eof:
            raise PipeError("Cannot write to a closed pipe")

    def _read_failure(self) -> Failure | None:
        if self._failure is not None:
            return self._failure
        if self._discarded:
            return Failure(PipeError("The pipe was discarded by its reader"))
        return None

    def _append(self, data: bytes) -> None:
        if self._discarded or not data:
            return
        if self._spool is not None:
            fd, view, done = self._spool.fileno(), memoryview(data), 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], self._spooled + done)
            self._spooled += done
        else:
            self._chunks.append(data)
            self._mem += len(data)
        self._cond.notify_all()

    def _unspool(self) -> None:
        """
        Move the next block of a buffered pipe from disk into C{_chunks}.
        """
        if self._spool is not None and not self._mem and self._unspooled < self._spooled:
            size = min(_SPOOL_BLOCK, self._spooled - self._unspooled)
            data = os.pread(self._spool.fileno(), size, self._unspooled)
            if not data:
                raise PipeError("The pipe's spool file was truncated")
            self._unspooled += len(data)
            self._chunks.append(data)
            self._mem = len(data)

    def _try_read(self, n: int) -> bytes | Failure | None:
        """
        Bytes, C{b""} at EOF, the failure to report, or L{None} to wait.
        """
        failure = self._read_failure()
        if failure is not None:
            return failure
        self._unspool()
        if self._mem:
            return self._take(n)
        return b"" if self._eof else None

    def _take(self, n: int) -> bytes:
        """
        Consume up to C{n} buffered bytes (all of them for C{n < 0}).
        """
        chunks, head = self._chunks, self._head
        want = self._mem if n < 0 else min(n, self._mem)
        pieces: list[bytes | memoryview] = []
        remaining = want
        while remaining:
            chunk = chunks[0]
            left = len(chunk) - head
            if left <= remaining:
                pieces.append(chunk if head == 0 else memoryview(chunk)[head:])
                chunks.popleft()
                head = 0
                remaining -= left
            else:
                pieces.append(memoryview(chunk)[head : head + remaining])
                head += remaining
                remaining = 0
        self._head = head
        self._consumed(want)
        if len(pieces) == 1:
            piece = pieces[0]
            return piece if isinstance(piece, bytes) else piece.tobytes()
        return b"".join(pieces)

    def _take_into(self, view: memoryview) -> int:
        chunks, head = self._chunks, self._head
        done = 0
        while done < len(view) and chunks:
            chunk = chunks[0]
            size = min(len(chunk) - head, len(view) - done)
            view[done : done + size] = memoryview(chunk)[head : head + size]
            done += size
            head += size
            if head == len(chunk):
                chunks.popleft()
                head = 0
        self._head = head
        self._consumed(done)
        return done

    def _consumed(self, size: int) -> None:
        self._mem -= size
        self._release_spool_if_done()
        self._cond.notify_all()

    def _release_spool_if_done(self) -> None:
        if self._spool is not None and self._complete():
            self._spool.close()
            self._spool = None

    def _drop_buffer(self) -> None:
        self._chunks.clear()
        self._head = self._mem = 0
        self._unspooled = self._spooled
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def _wait_readable(self) -> None:
        while True:
            failure = self._read_failure()
            if failure is not None:
                failure.raiseException()
            self._unspool()
            if self._mem or self._eof:
                return
            self._block("pipe.r.read()", "await pipe.read()")

    def _block(self, call: str, instead: str) -> None:
        if _in_reactor_thread():
            raise RuntimeError(f"{call} would block the reactor thread; use {instead} there")
        self._notify_reactor_locked()
        self._cond.wait()

    def _notify_reactor_locked(self) -> None:
        """
        Have the reactor thread react to what a worker thread changed.
        """
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self._reactor.callFromThread(self._scheduled_pump)

    # -- reactor thread -------------------------------------------------------

    def _check_reactor_thread(self, method: str, instead: str | None = None) -> None:
        if not _in_reactor_thread():
            hint = f"; use {instead} in a worker thread" if instead else ""
            raise RuntimeError(f"Pipe.{method}() must be called in the reactor thread{hint}")

    def _kick(self) -> None:
        if _in_reactor_thread():
            self._pump()
        else:
            with self._lock:
                self._notify_reactor_locked()

    def _scheduled_pump(self) -> None:
        with self._lock:
            self._pump_scheduled = False
        self._pump()

    def _forget_writer(self, waiter: Deferred[None]) -> None:
        if waiter in self._write_waiters:
            self._write_waiters.remove(waiter)

    def _forget_reader(self, reading: Deferred[bytes]) -> None:
        self._reads = deque(entry for entry in self._reads if entry[1] is not reading)

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
                with self._lock:
                    failure = self._failure
                if failure is not None:
                    self._break(failure)
                else:
                    self._deliver()
                    self._answer_reads()
                    self._steer_producer()
                    self._release_writers()
        finally:
            self._pumping = False

    def _deliver(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        while self._consumer is consumer and not self._consumer_paused:
            with self._lock:
                failure = self._read_failure()
                if failure is not None:
                    break
                self._unspool()
                if not self._mem:
                    break
                chunk = self._take(len(self._chunks[0]) - self._head)
            consumer.write(chunk)
        with self._lock:
            failure = self._read_failure()
            done = self._complete()
        if self._consumer is not consumer or not (done or failure):
            return
        delivered = self._delivered
        self._consumer = self._delivered = None
        if not self._consumer_stopped:
            consumer.unregisterProducer()
        if delivered is not None:
            if failure is not None:
                delivered.errback(failure)
            else:
                delivered.callback(None)

    def _answer_reads(self) -> None:
        while self._reads:
            n, reading = self._reads[0]
            with self._lock:
                result = self._try_read(n)
            if result is None:
                return
            self._reads.popleft()
            if isinstance(result, Failure):
                reading.errback(result)
            else:
                reading.callback(result)

    def _steer_producer(self) -> None:
        producer = self._producer
        if producer is None:
            return
        with self._lock:
            level = self._mem if self._spool is None and not self._discarded else 0
            eof = self._eof
        if self._streaming:
            if not self._producer_paused and level >= self.high_water:
                self._producer_paused = True
                producer.pauseProducing()  # type: ignore[attr-defined]
            elif self._producer_paused and level <= self.low_water:
                self._producer_paused = False
                producer.resumeProducing()
        elif not self._pull_requested and level < self.high_water and not eof:
            self._pull_requested = True
            producer.resumeProducing()

    def _release_writers(self) -> None:
        if not self._write_waiters:
            return
        with self._lock:
            wait = self._must_wait()
        if not wait:
            waiters, self._write_waiters = self._write_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _break(self, failure: Failure) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()
        consumer, self._consumer = self._consumer, None
        delivered, self._delivered = self._delivered, None
        if consumer is not None and not self._consumer_stopped:
            consumer.unregisterProducer()
        reads, self._reads = self._reads, deque()
        for _, reading in reads:
            reading.errback(failure)
        waiters, self._write_waiters = self._write_waiters, []
        for waiter in waiters:
            waiter.errback(failure)
            # An awaiting job has had the failure by now; an IConsumer caller
            # that ignored the Deferred must not get an "Unhandled error" log.
            waiter.addErrback(_ignore)
        if delivered is not None:
            delivered.errback(failure)


class _PipeEnd(io.RawIOBase):
    """
    One blocking end of a L{Pipe}, as a file object.
    """

    def __init__(self, pipe: Pipe) -> None:
        super().__init__()
        self._pipe = pipe

    def __del__(self) -> None:
        # A pipe end is closed explicitly, or by Pipes.close() when the job
        # ends: never by the garbage collector, in whatever thread it runs.
        pass


class PipeReader(_PipeEnd):
    """
    The blocking reading end of a L{Pipe}, for a job in a worker thread.

    C{read(n)} waits for C{n} bytes or EOF, like a buffered file;
    C{readinto} returns as soon as some bytes are there; C{read()} and
    C{readall()} read to EOF; lines are found without reading byte by byte.
    A broken pipe raises its abort reason.  C{close()} discards the rest of
    the stream (L{Pipe.discard}).  Called in the reactor thread, a call that
    would block raises L{RuntimeError}.
    """

    def readable(self) -> bool:
        return True

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed pipe reader")

    def readinto(self, buffer: Any) -> int:
        self._check_open()
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        return self._pipe._blocking_readinto(view)

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        if size is None or size < 0:
            return self.readall()
        return self._pipe._blocking_read(size, fill=True) if size else b""

    def readall(self) -> bytes:
        self._check_open()
        return self._pipe._blocking_read(-1, fill=True)

    def readline(self, size: int | None = -1) -> bytes:
        self._check_open()
        limit = -1 if size is None or size < 0 else size
        return self._pipe._blocking_readline(limit) if limit else b""

    def close(self) -> None:
        if not self.closed:
            self._pipe.discard()
        super().close()


class PipeWriter(_PipeEnd):
    """
    The blocking writing end of a L{Pipe}, for a job in a worker thread.

    C{write} waits while the pipe is full, then takes all of the data; it
    raises the abort reason once the pipe broke.  C{close()} marks EOF
    (L{Pipe.close}).  Called in the reactor thread, a write that would block
    raises L{RuntimeError}.
    """

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed pipe writer")
        data = data if isinstance(data, bytes) else bytes(memoryview(data).cast("B"))
        if data:
            self._pipe._blocking_write(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._pipe._close_writer()
        super().close()


class InputPipes:
    """
    The uploaded files of a job, in order, as the upload streams in.

    The HTTP layer feeds it (L{add}, L{finish}, L{fail}); the job iterates
    with C{for pipe in inputs} in a worker thread or C{async for pipe in
    inputs} in the reactor.  Asking for the next pipe discards what was left
    unread of the previous one, so that the upload can go on.

    @ivar first: the first pipe.
    """

    def __init__(self, first: Pipe) -> None:
        self.first = first
        self._reactor: Any = first._reactor
        self._pipes = [first]
        self._finished = False
        self._closed = False
        self._failure: Failure | None = None
        self._cond = threading.Condition()
        self._waiters: list[Deferred[None]] = []

    @property
    def arrived(self) -> tuple[Pipe, ...]:
        """
        The pipes that have arrived so far.
        """
        with self._cond:
            return tuple(self._pipes)

    def add(self, pipe: Pipe) -> None:
        """
        The next file arrives.  After L{fail} it is aborted at once, after
        L{close} discarded at once.

        @raise PipeError: after L{finish}.
        """
        with self._cond:
            if self._finished:
                raise PipeError("No input pipe can be added after finish()")
            self._pipes.append(pipe)
            failure, closed = self._failure, self._closed
            self._cond.notify_all()
        if failure is not None:
            pipe.abort(failure)
        elif closed:
            pipe.discard()
        self._wake()

    @property
    def first_pipe(self) -> Pipe:
        """
        L{first}, by the original daemon's name.
        """
        return self.first

    def add_pipe(self, pipe: Pipe) -> None:
        """
        L{add}, by the original daemon's name.
        """
        self.add(pipe)

    def finish(self) -> None:
        """
        No more files will arrive.
        """
        with self._cond:
            self._finished = True
            self._cond.notify_all()
        self._wake()

    def fail(self, reason: BaseException | Failure) -> None:
        """
        The upload failed: abort every pipe that arrived or will arrive, and
        make the iteration raise C{reason} where it would have ended.
        """
        failure = reason if isinstance(reason, Failure) else Failure(reason)
        with self._cond:
            if self._failure is None:
                self._failure = failure
            pipes = list(self._pipes)
            self._cond.notify_all()
        for pipe in pipes:
            pipe.abort(failure)
        self._wake()

    def close(self) -> None:
        """
        The job is done with its inputs: discard every pipe that arrived or
        will arrive, and end the iteration.
        """
        with self._cond:
            self._closed = True
            pipes = list(self._pipes)
            self._cond.notify_all()
        for pipe in pipes:
            pipe.discard()
        self._wake()

    def _state(self, index: int) -> tuple[bool, Pipe | None]:
        """
        With C{_cond} held: C{(True, pipe)}, C{(True, None)} at the end, or
        C{(False, None)} to wait.  Raises the failure.
        """
        if index < len(self._pipes):
            return True, self._pipes[index]
        if self._failure is not None:
            self._failure.raiseException()
        if self._finished or self._closed:
            return True, None
        return False, None

    def _move_on(self, index: int) -> None:
        if index:
            with self._cond:
                previous = self._pipes[index - 1]
            previous.discard()

    def __iter__(self) -> Iterator[Pipe]:
        index = 0
        while True:
            self._move_on(index)
            with self._cond:
                while True:
                    ready, pipe = self._state(index)
                    if ready:
                        break
                    if _in_reactor_thread():
                        raise RuntimeError(
                            "Iterating job.pipes.inputs would block the reactor thread; "
                            "use 'async for' there"
                        )
                    self._cond.wait()
            if pipe is None:
                return
            yield pipe
            index += 1

    def __aiter__(self) -> AsyncIterator[Pipe]:
        return self._aiterate()

    async def _aiterate(self) -> AsyncIterator[Pipe]:
        index = 0
        while True:
            self._move_on(index)
            while True:
                with self._cond:
                    ready, pipe = self._state(index)
                if ready:
                    break
                waiter: Deferred[None] = Deferred(self._waiters.remove)
                self._waiters.append(waiter)
                await waiter
            if pipe is None:
                return
            yield pipe
            index += 1

    def _wake(self) -> None:
        if not _in_reactor_thread():
            self._reactor.callFromThread(self._wake_waiters)
        else:
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)


class Pipes:
    """
    The pipes of a job: its uploaded C{inputs} and its C{output}.
    """

    def __init__(self, inputs: InputPipes | None = None, output: Pipe | None = None) -> None:
        self.inputs = inputs
        self.output = output

    @property
    def input(self) -> Pipe | None:
        """
        The first input pipe, or L{None} without inputs.
        """
        return self.inputs.first if self.inputs is not None else None

    def __iter__(self) -> Iterator[Pipe]:
        if self.inputs is not None:
            yield from self.inputs.arrived
        if self.output is not None:
            yield self.output

    def close(self) -> None:
        """
        The job ended: mark EOF on its output, discard what is left of its inputs.
        """
        if self.output is not None:
            self.output.close()
        if self.inputs is not None:
            self.inputs.close()

    def abort(self, reason: BaseException | Failure) -> None:
        """
        The job aborted: break every pipe, waking blocked reads and writes with C{reason}.
        """
        failure = reason if isinstance(reason, Failure) else Failure(reason)
        if self.output is not None:
            self.output.abort(failure)
        if self.inputs is not None:
            self.inputs.fail(failure)
