"""
In-memory tests of the layers under midjobs.pipe: the buffer strategies, the
reactor-side PipeCore's flow-control edges, and the thread ends' one bridge.

A worker thread reaches a pipe only through C{blockingCallFromThread}.  Here
its calls go to L{HandReactor}, which queues them until the test runs them in
the reactor thread: the test knows exactly when a thread end is blocked.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from midjobs.pipe import InputPipes, Pipe, PipeError
from midjobs.pipe._buffer import MemoryBuffer, SpoolBuffer
from midjobs.pipe._core import PipeCore, PipeState
from test_pipe import RecordingProducer


class Boom(Exception):
    pass


class HandReactor:
    """
    The reactor as a worker thread sees it: what it asks with
    C{callFromThread} waits until the test runs it with L{run}.
    """

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()
        self.ran = 0

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.put((f, args))

    def run(self) -> None:
        """
        Run the next call a thread asked for (waiting for it).
        """
        f, args = self.calls.get(timeout=10)
        self.ran += 1
        f(*args)


class Worker:
    """
    A thread running C{f()}; L{result} waits for it and returns or raises.
    """

    def __init__(self, f: Callable[[], Any]) -> None:
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(f,), daemon=True)
        self._thread.start()

    def _run(self, f: Callable[[], Any]) -> None:
        try:
            self._outcome.append((True, f()))
        except BaseException as e:
            self._outcome.append((False, e))

    def result(self) -> Any:
        self._thread.join(10)
        assert self._outcome, "the worker did not finish"
        ok, value = self._outcome[0]
        if not ok:
            raise value
        return value


def fired(d: Deferred[Any]) -> list[Any]:
    results: list[Any] = []
    d.addBoth(results.append)
    return results


def hand_pipe(**kwargs: Any) -> tuple[HandReactor, Pipe]:
    reactor = HandReactor()
    return reactor, Pipe(reactor, **kwargs)  # type: ignore[arg-type]  # callFromThread is all it needs


# -- buffers ---------------------------------------------------------------------


def test_memory_buffer_hands_out_chunks_as_written() -> None:
    buffer = MemoryBuffer()
    first, second = b"a" * 10, b"b" * 5
    buffer.append(first)
    buffer.append(b"")
    buffer.append(second)
    assert buffer.size == buffer.level == buffer.in_memory == 15
    assert buffer.chunk() is first  # no copy
    assert buffer.take(2) == b"bb"
    view = memoryview(bytearray(10))
    assert buffer.take_into(view) == 3 and bytes(view[:3]) == b"bbb"
    assert buffer.size == 0 and buffer.chunk() == b"" and buffer.take(-1) == b""


def test_spool_reads_back_in_blocks() -> None:
    buffer = SpoolBuffer(block=4)
    data = os.urandom(23)
    for start in range(0, len(data), 5):
        buffer.append(data[start : start + 5])
    assert buffer.size == 23 and buffer.level == 0 and buffer.in_memory == 0
    assert buffer.take(-1) == data[:4]  # one block back from disk
    assert buffer.in_memory == 0
    assert buffer.take(100) == data[4:8]  # never more than a block
    assert buffer.take(2) == data[8:10]
    assert buffer.in_memory == 2  # the rest of that block
    assert buffer.chunk() == data[10:12]
    view = memoryview(bytearray(9))
    assert buffer.take_into(view) == 9  # straight from the file, past a block
    assert bytes(view) == data[12:21]
    assert buffer.take(-1) + buffer.take(-1) == data[21:]
    assert buffer.size == 0
    assert buffer.file is not None
    buffer.clear()
    assert buffer.file is None
    buffer.append(b"dropped")
    assert buffer.size == 0


# -- PipeCore: a plain IConsumer and IPushProducer ------------------------------------


def test_core_is_a_plain_consumer_and_producer() -> None:
    core = PipeCore(MemoryBuffer(), 10, 4)
    assert verifyObject(IConsumer, core) and verifyObject(IPushProducer, core)
    assert core.write(b"x") is None  # type: ignore[func-returns-value]  # the point of the test
    with pytest.raises(ValueError):
        PipeCore(MemoryBuffer(), 4, 4)


def test_pause_exactly_at_high_water_resume_exactly_at_low() -> None:
    core = PipeCore(MemoryBuffer(), 10, 4)
    producer = RecordingProducer()
    core.registerProducer(producer, True)
    core.write(b"x" * 9)
    writable = fired(core.wait_writable())
    assert producer.events == [] and writable == [None]
    core.write(b"x")  # 10: high water
    assert producer.events == ["pause"]
    waiting = fired(core.wait_writable())
    assert waiting == []
    assert fired(core.read(1)) == [b"x"]  # 9: the writer may go on, the producer not yet
    assert waiting == [None] and producer.events == ["pause"]
    assert fired(core.read(4)) == [b"xxxx"]  # 5
    assert producer.events == ["pause"]
    assert fired(core.read(1)) == [b"x"]  # 4: low water
    assert producer.events == ["pause", "resume"]


def test_wait_writable_fails_when_broken() -> None:
    core = PipeCore(MemoryBuffer(), 10, 4)
    core.write(b"x" * 10)
    waiting = fired(core.wait_writable())
    core.abort(Boom("gone"))
    assert isinstance(waiting[0], Failure) and waiting[0].check(Boom)
    assert isinstance(fired(core.wait_writable())[0], Failure)
    assert core.state is PipeState.BROKEN


@implementer(IConsumer)
class PausingConsumer:
    """
    A consumer whose buffer fills after C{room} writes: then it pauses its
    producer from inside C{write}, as a transport does.
    """

    def __init__(self, room: int) -> None:
        self.room = room
        self.written: list[bytes] = []
        self.producer: IPushProducer | None = None

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if len(self.written) >= self.room:
            assert self.producer is not None
            self.producer.pauseProducing()


def test_consumer_pausing_mid_delivery() -> None:
    pipe = Pipe(high_water=100, low_water=10)
    for data in (b"a", b"b", b"c", b"d"):
        pipe.write(data)
    consumer = PausingConsumer(room=2)
    delivered = fired(pipe.deliver_to(consumer))
    assert consumer.written == [b"a", b"b"]  # stopped right after the write that paused it
    assert consumer.producer is pipe
    pipe.write(b"e")
    assert consumer.written == [b"a", b"b"]
    consumer.room = 4
    pipe.resumeProducing()
    assert consumer.written == [b"a", b"b", b"c", b"d"]
    consumer.room = 100
    pipe.resumeProducing()
    pipe.close()
    assert consumer.written == [b"a", b"b", b"c", b"d", b"e"]
    assert delivered == [None] and consumer.producer is None


def test_download_paused_holds_the_awaiting_writer() -> None:
    pipe = Pipe(high_water=10, low_water=4)
    transport = StringTransport()
    pipe.deliver_to(transport)
    pipe.pauseProducing()
    assert fired(pipe.write(b"x" * 9)) == [None]
    waiting = fired(pipe.write(b"y"))
    assert waiting == []
    pipe.resumeProducing()
    assert waiting == [None] and transport.value() == b"x" * 9 + b"y"


def test_awaiting_writer_released_when_the_reader_discards() -> None:
    pipe = Pipe(high_water=10, low_water=4)
    waiting = fired(pipe.write(b"x" * 12))
    assert waiting == []
    pipe.discard()
    assert waiting == [None]
    assert fired(pipe.write(b"y" * 100)) == [None]  # dropped: never waits
    failure = fired(pipe.read())[0]
    assert isinstance(failure, Failure) and failure.check(PipeError)


def test_spooled_pipe_reads_back_in_blocks_and_never_holds_the_writer() -> None:
    pipe = Pipe(buffered=True, high_water=10, low_water=4)
    producer = RecordingProducer()
    pipe.registerProducer(producer, True)
    data = os.urandom(600 * 1024)
    for start in range(0, len(data), 100 * 1024):
        assert fired(pipe.write(data[start : start + 100 * 1024])) == [None]
    assert producer.events == [] and pipe.in_memory == 0
    pipe.close()
    blocks = []
    while block := fired(pipe.read())[0]:
        assert len(block) <= 256 * 1024
        assert pipe.in_memory <= 256 * 1024
        blocks.append(block)
    assert b"".join(blocks) == data and len(blocks) == 3
    assert not pipe.holds_spool


# -- thread ends: one bridge, large blocks ------------------------------------------


def test_thread_reader_blocked_then_aborted_raises_the_reason() -> None:
    reactor, pipe = hand_pipe()
    pipe.write(b"partial")
    worker = Worker(lambda: pipe.r.read(100))
    reactor.run()  # the read took b"partial" and asked for more...
    reactor.run()  # ...and now waits in the reactor for the rest
    pipe.abort(Boom("upload interrupted"))
    with pytest.raises(Boom):
        worker.result()  # never a short read


def test_thread_writer_blocked_then_released_by_discard() -> None:
    reactor, pipe = hand_pipe(high_water=10, low_water=4)
    pipe.write(b"x" * 10)
    worker = Worker(lambda: pipe.w.write(b"more"))
    reactor.run()  # the write waits for room
    assert worker._thread.is_alive()
    pipe.discard()
    assert worker.result() == 4


def test_thread_writer_blocked_then_broken_by_the_download_going_away() -> None:
    reactor, pipe = hand_pipe(high_water=10, low_water=4)
    transport = StringTransport()
    delivered = fired(pipe.deliver_to(transport))
    pipe.pauseProducing()
    pipe.write(b"x" * 10)
    worker = Worker(lambda: pipe.w.write(b"more"))
    reactor.run()
    pipe.stopProducing()
    with pytest.raises(PipeError, match="reading side"):
        worker.result()
    assert isinstance(delivered[0], Failure)


def test_thread_readinto_fills_the_buffer_in_large_blocks() -> None:
    reactor, pipe = hand_pipe(high_water=256 * 1024, low_water=64 * 1024)
    data = os.urandom(1024 * 1024)
    for start in range(0, 700 * 1024, 64 * 1024):
        pipe.write(data[start : min(start + 64 * 1024, 700 * 1024)])
    buffer = bytearray(1024 * 1024)
    worker = Worker(lambda: pipe.r.readinto(buffer))
    reactor.run()  # one trip: it takes the 700 KiB buffered and waits for the rest
    assert pipe.in_memory == 0
    pipe.write(data[700 * 1024 : 900 * 1024])  # straight into the worker's buffer
    assert pipe.in_memory == 0 and worker._thread.is_alive()
    assert fired(pipe.write(data[900 * 1024 :])) == [None]  # never held back
    assert worker.result() == len(data) and buffer == data
    assert reactor.ran == 1


def test_thread_readline_returns_a_line_as_soon_as_it_is_there() -> None:
    reactor, pipe = hand_pipe()
    worker = Worker(pipe.r.readline)
    reactor.run()  # nothing there yet: the read waits in the reactor
    pipe.write(b"first line\nsecond")
    assert worker.result() == b"first line\n"  # not waiting for a large block
    assert reactor.ran == 1


def test_thread_read_to_eof_in_large_blocks() -> None:
    reactor, pipe = hand_pipe(high_water=1024 * 1024, low_water=1024)
    data = os.urandom(300 * 1024)
    for start in range(0, len(data), 1000):
        pipe.write(data[start : start + 1000])
    pipe.close()
    worker = Worker(pipe.r.read)
    reactor.run()  # everything buffered
    reactor.run()  # EOF
    assert worker.result() == data
    assert reactor.ran == 2


def test_thread_writer_each_write_is_one_call_and_arrives_whole() -> None:
    reactor, pipe = hand_pipe()
    block = os.urandom(1024 * 1024 + 3)
    worker = Worker(lambda: pipe.w.write(memoryview(block)))
    reactor.run()
    assert worker.result() == len(block)
    assert reactor.ran == 1
    assert fired(pipe.read())[0] == block


def test_thread_writes_within_the_reported_room_do_not_wait() -> None:
    reactor, pipe = hand_pipe(high_water=40, low_water=10)
    blocks = [bytes([i]) * 10 for i in range(6)]

    def job() -> None:
        for block in blocks[:4]:
            pipe.w.write(block)

    worker = Worker(job)
    reactor.run()  # the first write waits for an answer: room for 30 more
    worker.result()  # the other three went without waiting
    assert pipe.in_memory == 10
    for _ in range(3):
        reactor.run()
    assert pipe.in_memory == 40  # in order, and no more than high water
    writing = Worker(lambda: pipe.w.write(blocks[4]))
    reactor.run()  # no room left: this one waits
    assert writing._thread.is_alive()
    assert fired(pipe.read(25)) == [b"".join(blocks[:4])[:25]]
    assert writing.result() == 10
    pipe.abort(Boom("download went away"))
    breaking = Worker(lambda: [pipe.w.write(block) for block in blocks[4:]])
    reactor.run()  # within the room left: sent on, and dropped by the broken pipe
    reactor.run()  # past it: this one waits for an answer, which is the abort reason
    with pytest.raises(Boom):
        breaking.result()


def test_thread_iteration_of_inputs_goes_through_the_same_bridge() -> None:
    reactor, first = hand_pipe(filename="a")
    inputs = InputPipes(first)
    worker = Worker(lambda: [pipe.filename for pipe in inputs])
    reactor.run()  # the first pipe
    reactor.run()  # discarding the first (the job moved on)
    reactor.run()  # waiting for the second
    assert first.state is PipeState.DISCARDED
    second = Pipe(reactor, filename="b")  # type: ignore[arg-type]  # as in hand_pipe
    inputs.add(second)
    reactor.run()  # discarding the second
    reactor.run()  # waiting again
    inputs.finish()
    assert worker.result() == ["a", "b"]
