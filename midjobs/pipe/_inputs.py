"""
A job's pipes: L{InputPipes}, its uploaded files as they arrive, and L{Pipes}.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import AsyncIterator, Iterator

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from ._errors import PipeError, as_failure
from ._pipe import Pipe
from ._threads import call_blocking, call_soon

__all__ = ["InputPipes", "Pipes"]

_ITERATION_BLOCKS = "Iterating job.pipes.inputs would block the reactor thread; use 'async for' there"


class _Arrival(Enum):
    """
    Whether more files may arrive.
    """

    #: The upload goes on: more files may come.
    OPEN = auto()
    #: No more files will come.
    FINISHED = auto()
    #: The job is done with its inputs: later files are discarded.
    CLOSED = auto()
    #: The upload failed: the iteration raises where it would have ended.
    FAILED = auto()


class InputPipes:
    """
    The uploaded files of a job, in order, as the upload streams in.

    The HTTP layer feeds it (L{add}, L{finish}, L{fail}); the job iterates
    with C{for pipe in inputs} in a worker thread or C{async for pipe in
    inputs} in the reactor.  Asking for the next pipe discards what was left
    unread of the previous one, so that the upload can go on.  Its state
    lives in the reactor thread; L{add}, L{finish}, L{fail} and L{close}
    may be called from any thread.

    @ivar first: the first pipe.
    """

    def __init__(self, first: Pipe) -> None:
        self.first = first
        self._reactor = first.reactor
        self._pipes = [first]
        self._arrival = _Arrival.OPEN
        self._failure: Failure | None = None
        self._waiting: list[tuple[int, Deferred[Pipe | None]]] = []

    @property
    def arrived(self) -> tuple[Pipe, ...]:
        """
        The pipes that have arrived so far.
        """
        return tuple(self._pipes)

    @property
    def first_pipe(self) -> Pipe:
        """
        L{first}, by the original daemon's name.
        """
        return self.first

    def add(self, pipe: Pipe) -> None:
        """
        The next file arrives.  After L{fail} it is aborted at once, after
        L{close} discarded at once.

        @raise PipeError: after L{finish}.
        """
        if self._arrival is _Arrival.FINISHED:
            raise PipeError("No input pipe can be added after finish()")
        call_soon(self._reactor, self._add, pipe)

    def add_pipe(self, pipe: Pipe) -> None:
        """
        L{add}, by the original daemon's name.
        """
        self.add(pipe)

    def finish(self) -> None:
        """
        No more files will arrive.
        """
        call_soon(self._reactor, self._end, _Arrival.FINISHED, None)

    def fail(self, reason: BaseException | Failure) -> None:
        """
        The upload failed: abort every pipe that arrived or will arrive, and
        make the iteration raise C{reason} where it would have ended.
        """
        failure = as_failure(reason)
        call_soon(self._reactor, self._end, _Arrival.FAILED, failure)

    def close(self) -> None:
        """
        The job is done with its inputs: discard every pipe that arrived or
        will arrive, and end the iteration.
        """
        call_soon(self._reactor, self._end, _Arrival.CLOSED, None)

    def __iter__(self) -> Iterator[Pipe]:
        previous: Pipe | None = None
        index = 0
        while True:
            if previous is not None:
                previous.discard()
            pipe = call_blocking(self._reactor, _ITERATION_BLOCKS, lambda: self._next(index))
            if pipe is None:
                return
            yield pipe
            previous = pipe
            index += 1

    def __aiter__(self) -> AsyncIterator[Pipe]:
        return self._aiterate()

    async def _aiterate(self) -> AsyncIterator[Pipe]:
        previous: Pipe | None = None
        index = 0
        while True:
            if previous is not None:
                previous.discard()
            pipe = await self._next(index)
            if pipe is None:
                return
            yield pipe
            previous = pipe
            index += 1

    # -- reactor thread ---------------------------------------------------------

    def _add(self, pipe: Pipe) -> None:
        self._pipes.append(pipe)
        if self._failure is not None:
            pipe.abort(self._failure)
        elif self._arrival is _Arrival.CLOSED:
            pipe.discard()
        self._answer()

    def _end(self, arrival: _Arrival, failure: Failure | None) -> None:
        if self._arrival is _Arrival.FAILED:
            return
        if arrival is _Arrival.FINISHED and self._arrival is not _Arrival.OPEN:
            return
        self._arrival, self._failure = arrival, failure
        for pipe in self._pipes:
            if failure is not None:
                pipe.abort(failure)
            elif arrival is _Arrival.CLOSED:
                pipe.discard()
        self._answer()

    def _next(self, index: int) -> Deferred[Pipe | None]:
        """
        The pipe at C{index} once it arrived, L{None} at the end, or the
        upload's failure.
        """
        if not self._ready(index):
            answer: Deferred[Pipe | None] = Deferred(self._forget)
            self._waiting.append((index, answer))
            return answer
        if index < len(self._pipes):
            return succeed(self._pipes[index])
        if self._failure is not None:
            return fail(self._failure)
        return succeed(None)

    def _ready(self, index: int) -> bool:
        return index < len(self._pipes) or self._arrival is not _Arrival.OPEN

    def _forget(self, answer: Deferred[Pipe | None]) -> None:
        self._waiting = [entry for entry in self._waiting if entry[1] is not answer]

    def _answer(self) -> None:
        waiting, self._waiting = self._waiting, []
        for index, answer in waiting:
            if self._ready(index):
                self._next(index).chainDeferred(answer)
            else:
                self._waiting.append((index, answer))


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
        failure = as_failure(reason)
        if self.output is not None:
            self.output.abort(failure)
        if self.inputs is not None:
            self.inputs.fail(failure)
