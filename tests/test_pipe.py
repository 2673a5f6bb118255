"""
Tests for midjobs.pipe: flow control at the water marks, both reading and
writing sides, the thread API against an async other side, buffered pipes,
InputPipes and Pipes.
"""

from __future__ import annotations

import gc
import hashlib
import random
import threading
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.testing import NonStreamingProducer, StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from midjobs.pipe import InputPipes, Pipe, PipeBrokenError, PipeError, Pipes, PipeState


class Boom(Exception):
    pass


@implementer(IPushProducer)
class RecordingProducer:
    """
    A push producer that records what the pipe asks of it.
    """

    def __init__(self) -> None:
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


def result_of(d: defer.Deferred[Any]) -> Any:
    """
    The result of a Deferred that must have fired already; raises its failure.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def has_fired(d: defer.Deferred[Any]) -> bool:
    return d.called


def small_pipe(**kwargs: Any) -> Pipe:
    return Pipe(high_water=10, low_water=4, **kwargs)


# -- interfaces and the writing side -----------------------------------------


def test_provides_twisted_interfaces() -> None:
    pipe = Pipe()
    assert verifyObject(IConsumer, pipe)
    assert verifyObject(IPushProducer, pipe)


def test_bad_water_marks() -> None:
    with pytest.raises(ValueError):
        Pipe(high_water=10, low_water=10)


def test_push_producer_paused_exactly_at_high_water_resumed_exactly_at_low() -> None:
    pipe = small_pipe()
    producer = RecordingProducer()
    pipe.registerProducer(producer, True)
    assert has_fired(pipe.write(b"123456789"))
    assert producer.events == []
    pending = pipe.write(b"0")  # 10 bytes: high water
    assert producer.events == ["pause"]
    assert not has_fired(pending)

    assert result_of(pipe.read(1)) == b"1"  # 9 left: below high water
    assert has_fired(pending)
    assert producer.events == ["pause"]
    assert result_of(pipe.read(4)) == b"2345"  # 5 left
    assert producer.events == ["pause"]
    assert result_of(pipe.read(1)) == b"6"  # 4 left: low water
    assert producer.events == ["pause", "resume"]
    assert result_of(pipe.read()) == b"7890"
    assert producer.events == ["pause", "resume"]


def test_producer_registered_on_full_pipe_is_paused_at_once() -> None:
    pipe = small_pipe()
    pipe.write(b"x" * 12)
    producer = RecordingProducer()
    pipe.registerProducer(producer, True)
    assert producer.events == ["pause"]


def test_unregister_and_register_another_producer() -> None:
    pipe = small_pipe()
    pipe.registerProducer(RecordingProducer(), True)
    with pytest.raises(RuntimeError):
        pipe.registerProducer(RecordingProducer(), True)
    pipe.unregisterProducer()
    pipe.registerProducer(RecordingProducer(), True)


def test_pull_producer_asked_while_there_is_room() -> None:
    pipe = Pipe(high_water=4, low_water=1)
    producer = NonStreamingProducer(pipe)
    finished = producer.result
    pipe.registerProducer(producer, False)
    assert producer.counter == 4  # b"0123": high water reached
    assert result_of(pipe.read(2)) == b"01"
    assert producer.counter == 6
    assert result_of(pipe.read()) == b"2345"
    assert producer.counter == 10  # it wrote its last value and unregistered
    assert result_of(finished) is None
    pipe.close()
    assert result_of(pipe.read()) == b"6789"
    assert result_of(pipe.read()) == b""


def test_write_deferred_waits_while_full() -> None:
    pipe = small_pipe()
    first = pipe.write(b"x" * 15)
    assert not has_fired(first)
    assert result_of(pipe.read(5)) == b"xxxxx"
    assert not has_fired(first)  # 10 left: still at high water
    pipe.read(1)
    assert result_of(first) is None


def test_write_after_close_raises_and_close_is_idempotent() -> None:
    pipe = Pipe()
    assert result_of(pipe.write(b"data")) is None
    assert result_of(pipe.close()) is None
    assert result_of(pipe.close()) is None
    with pytest.raises(PipeError):
        pipe.write(b"more")
    assert result_of(pipe.read()) == b"data"
    assert result_of(pipe.read()) == b""
    assert result_of(pipe.read(10)) == b""


def test_read_semantics() -> None:
    pipe = Pipe()
    pipe.write(b"abc")
    pipe.write(b"defg")
    assert result_of(pipe.read(0)) == b""
    assert result_of(pipe.read(2)) == b"ab"
    assert result_of(pipe.read(3)) == b"cde"
    pending = pipe.read(10)
    assert result_of(pending) == b"fg"  # what is there, not 10
    waiting = pipe.read(10)
    assert not has_fired(waiting)
    pipe.write(b"h")
    assert result_of(waiting) == b"h"
    at_eof = pipe.read()
    pipe.close()
    assert result_of(at_eof) == b""


def test_cancelled_read_is_forgotten() -> None:
    pipe = Pipe()
    reading = pipe.read()
    reading.cancel()
    with pytest.raises(defer.CancelledError):
        result_of(reading)
    pipe.write(b"next")
    assert result_of(pipe.read()) == b"next"


def test_cancelled_write_is_forgotten() -> None:
    pipe = small_pipe()
    waiting = pipe.write(b"x" * 10)
    waiting.cancel()
    with pytest.raises(defer.CancelledError):
        result_of(waiting)
    assert result_of(pipe.read()) == b"x" * 10


@settings(max_examples=200, deadline=None)
@given(
    writes=st.lists(st.binary(min_size=0, max_size=40), max_size=20),
    sizes=st.lists(st.integers(min_value=-1, max_value=50).filter(bool), min_size=1, max_size=20),
)
def test_reads_return_the_bytes_written_in_order(writes: list[bytes], sizes: list[int]) -> None:
    pipe = Pipe(high_water=32, low_water=8)
    for data in writes:
        pipe.write(data)
    pipe.close()
    expected = b"".join(writes)
    got = b""
    index = 0
    while True:
        n = sizes[index % len(sizes)]
        index += 1
        chunk = result_of(pipe.read(n))
        if not chunk:
            break
        assert n < 0 or len(chunk) <= n
        got += chunk
    assert got == expected


# -- abort ---------------------------------------------------------------------


def test_abort_makes_reads_raise_never_eof() -> None:
    pipe = Pipe()
    pending = pipe.read()
    pipe.abort(Boom("upload interrupted"))
    with pytest.raises(Boom):
        result_of(pending)
    with pytest.raises(Boom):
        result_of(pipe.read())
    with pytest.raises(Boom):
        pipe.write(b"more")
    assert isinstance(pipe.failure, Failure)


def test_abort_with_buffered_data_and_after_close() -> None:
    pipe = Pipe()
    pipe.write(b"half a file")
    pipe.close()
    pipe.abort(Boom("job aborted"))
    with pytest.raises(Boom):
        result_of(pipe.read())


def test_abort_after_everything_was_read_changes_nothing() -> None:
    pipe = Pipe()
    pipe.write(b"all")
    pipe.close()
    assert result_of(pipe.read()) == b"all"
    pipe.abort(Boom("too late"))
    assert pipe.failure is None
    assert result_of(pipe.read()) == b""


def test_abort_stops_producer_and_fails_pending_write() -> None:
    pipe = small_pipe()
    producer = RecordingProducer()
    pipe.registerProducer(producer, True)
    waiting = pipe.write(b"x" * 10)
    outcome: list[Any] = []
    waiting.addBoth(outcome.append)  # as an awaiting job does
    pipe.abort(Failure(Boom("gone")))
    assert producer.events == ["pause", "stop"]
    assert isinstance(outcome[0], Failure) and outcome[0].check(Boom)
    pipe.unregisterProducer()  # harmless afterwards


def test_ignored_write_deferred_logs_no_unhandled_error() -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        pipe = small_pipe()
        pipe.registerProducer(RecordingProducer(), True)
        pipe.write(b"x" * 10)  # an IConsumer caller ignores the Deferred
        pipe.abort(Boom("gone"))
        with pytest.raises(Boom):
            pipe.write(b"y")  # the next write tells
        del pipe
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert not [event for event in events if "log_failure" in event]


def test_registering_with_broken_pipe_stops_the_producer() -> None:
    pipe = Pipe()
    pipe.abort(Boom())
    producer = RecordingProducer()
    pipe.registerProducer(producer, True)
    assert producer.events == ["stop"]


@pytest_twisted.ensureDeferred
async def test_awaited_write_raises_when_pipe_breaks() -> None:
    pipe = small_pipe()

    async def job() -> None:
        await pipe.write(b"x" * 10)

    running = defer.Deferred.fromCoroutine(job())
    assert not running.called
    pipe.abort(Boom("download went away"))
    with pytest.raises(Boom):
        await running


# -- reading side: deliver_to ------------------------------------------------


def test_deliver_to_consumer_with_flow_control() -> None:
    pipe = small_pipe()
    upstream = RecordingProducer()
    pipe.registerProducer(upstream, True)
    transport = StringTransport()
    pipe.write(b"early")
    delivered = pipe.deliver_to(transport)
    assert transport.producer is pipe and transport.streaming is True
    assert transport.value() == b"early"

    pipe.pauseProducing()  # as the transport would when its buffer is full
    pipe.write(b"123456789")
    assert transport.value() == b"early"
    assert upstream.events == []
    pipe.write(b"0")
    assert upstream.events == ["pause"]
    assert transport.value() == b"early"

    pipe.resumeProducing()
    assert transport.value() == b"early1234567890"
    assert upstream.events == ["pause", "resume"]
    assert not delivered.called

    pipe.write(b"tail")
    pipe.close()
    assert transport.value() == b"early1234567890tail"
    assert transport.producer is None
    assert result_of(delivered) is None


def test_deliver_to_consumer_paused_at_eof_still_finishes() -> None:
    pipe = Pipe()
    transport = StringTransport()
    delivered = pipe.deliver_to(transport)
    pipe.write(b"all")
    pipe.pauseProducing()
    pipe.close()
    assert transport.value() == b"all"
    assert result_of(delivered) is None


def test_consumer_going_away_breaks_the_writer() -> None:
    pipe = small_pipe()
    upstream = RecordingProducer()
    pipe.registerProducer(upstream, True)
    transport = StringTransport()
    delivered = pipe.deliver_to(transport)
    pipe.pauseProducing()
    waiting = pipe.write(b"x" * 10)
    outcome: list[Any] = []
    waiting.addBoth(outcome.append)
    pipe.stopProducing()  # the download client disconnected
    with pytest.raises(PipeBrokenError, match="reading side"):
        outcome[0].raiseException()
    with pytest.raises(PipeBrokenError):
        pipe.write(b"more")
    with pytest.raises(PipeBrokenError):
        result_of(delivered)
    assert upstream.events == ["pause", "stop"]


def test_deliver_to_aborted_pipe_fails() -> None:
    pipe = Pipe()
    transport = StringTransport()
    delivered = pipe.deliver_to(transport)
    pipe.write(b"partial")
    pipe.abort(Boom("job failed"))
    with pytest.raises(Boom):
        result_of(delivered)
    assert transport.producer is None  # unregistered: the HTTP layer decides
    broken = Pipe()
    broken.abort(Boom("before"))
    other = StringTransport()
    with pytest.raises(Boom):
        result_of(broken.deliver_to(other))
    assert other.producer is None


def test_only_one_reader() -> None:
    pipe = Pipe()
    pipe.deliver_to(StringTransport())
    with pytest.raises(PipeError):
        pipe.deliver_to(StringTransport())
    with pytest.raises(PipeError):
        pipe.read()


# -- thread API ----------------------------------------------------------------


def test_file_like_reader_semantics_without_blocking() -> None:
    pipe = Pipe()
    for data in (b"line one\nli", b"ne two\n", b"\nlast", b" line"):
        pipe.write(data)
    pipe.close()
    assert pipe.r.readable() and not pipe.r.writable()
    assert pipe.r.readline() == b"line one\n"
    assert pipe.r.read(3) == b"lin"
    assert list(pipe.r) == [b"e two\n", b"\n", b"last line"]
    assert pipe.r.read() == b""
    assert pipe.r.readinto(bytearray(4)) == 0


def test_reader_read_n_and_readinto() -> None:
    pipe = Pipe()
    pipe.write(b"abc")
    pipe.write(b"defgh")
    pipe.close()
    buffer = bytearray(4)
    assert pipe.r.readinto(buffer) == 4 and buffer == b"abcd"
    assert pipe.r.read(2) == b"ef"
    assert pipe.r.readline(2) == b"gh"
    assert pipe.r.readall() == b""


def test_thread_api_on_reactor_thread_raises_instead_of_deadlock() -> None:
    pipe = small_pipe()
    with pytest.raises(RuntimeError, match="reactor thread"):
        pipe.r.read(1)
    assert pipe.w.write(b"x" * 10) == 10  # room: does not block
    with pytest.raises(RuntimeError, match="reactor thread"):
        pipe.w.write(b"y")
    assert pipe.r.read(10) == b"x" * 10


def test_reader_close_discards_the_rest() -> None:
    pipe = small_pipe()
    producer = RecordingProducer()
    pipe.registerProducer(producer, True)
    waiting = pipe.write(b"x" * 12)
    assert producer.events == ["pause"]
    pipe.r.close()
    assert producer.events == ["pause", "resume"]
    assert result_of(waiting) is None
    assert result_of(pipe.write(b"y" * 100)) is None  # dropped, never waits
    with pytest.raises(PipeError, match="discarded"):
        result_of(pipe.read())
    with pytest.raises(ValueError):
        pipe.r.read()


def test_pipe_methods_refuse_worker_threads() -> None:
    pipe = Pipe()
    errors: list[BaseException] = []

    def worker() -> None:
        for call in (lambda: pipe.write(b"x"), pipe.read):
            try:
                call()
            except RuntimeError as e:
                errors.append(e)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert len(errors) == 2 and "pipe.w.write()" in str(errors[0])


@pytest_twisted.ensureDeferred
async def test_thread_reader_async_writer() -> None:
    pipe = small_pipe()
    reading = deferToThread(pipe.r.read)
    sent = [bytes([i]) * (i + 1) for i in range(40)]
    for data in sent:
        await pipe.write(data)
    await pipe.close()
    assert await reading == b"".join(sent)


@pytest_twisted.ensureDeferred
async def test_thread_writer_async_reader() -> None:
    pipe = small_pipe()
    sent = [bytes([i]) * (i + 1) for i in range(40)]

    def job() -> None:
        with pipe.w as w:
            for data in sent:
                w.write(bytearray(data))

    writing = deferToThread(job)
    got = []
    while data := await pipe.read(7):
        assert len(data) <= 7
        got.append(data)
    await writing
    assert b"".join(got) == b"".join(sent)


@pytest_twisted.ensureDeferred
async def test_thread_writer_into_paused_download() -> None:
    pipe = small_pipe()
    transport = StringTransport()
    delivered = pipe.deliver_to(transport)
    pipe.pauseProducing()
    first_written: defer.Deferred[None] = defer.Deferred()

    def job() -> None:
        pipe.w.write(b"x" * 10)
        reactor.callFromThread(first_written.callback, None)
        pipe.w.write(b"y" * 5)  # the pipe is full: waits for the download
        pipe.w.close()

    writing = deferToThread(job)
    await first_written
    assert transport.value() == b""
    pipe.resumeProducing()
    await writing
    await delivered
    assert transport.value() == b"x" * 10 + b"y" * 5


@pytest_twisted.ensureDeferred
async def test_abort_wakes_blocked_thread_reader_and_writer() -> None:
    reader_pipe = Pipe()
    writer_pipe = small_pipe()
    writer_pipe.w.write(b"z" * 10)
    reading = deferToThread(reader_pipe.r.read, 100)
    writing = deferToThread(writer_pipe.w.write, b"more")
    Pipes(inputs=InputPipes(reader_pipe), output=writer_pipe).abort(Boom("job aborted"))
    with pytest.raises(Boom):
        await reading
    with pytest.raises(Boom):
        await writing


@pytest_twisted.ensureDeferred
async def test_thread_reader_of_upload_with_push_producer() -> None:
    pipe = small_pipe()
    upstream = RecordingProducer()
    pipe.registerProducer(upstream, True)
    pipe.write(b"a" * 10)
    assert upstream.events == ["pause"]
    resumed: defer.Deferred[None] = defer.Deferred()
    upstream.resumeProducing = lambda: resumed.callback(None)  # type: ignore[method-assign]
    reading = deferToThread(pipe.r.read, 8)
    await resumed  # the thread read down to low water: the reactor resumed
    pipe.write(b"b" * 3)
    pipe.close()
    assert await reading == b"a" * 8
    assert pipe.r.read() == b"aabbb"


# -- buffered pipes ------------------------------------------------------------


def test_buffered_pipe_never_waits_and_reads_from_the_start() -> None:
    pipe = Pipe(buffered=True, high_water=10, low_water=4)
    producer = RecordingProducer()
    pipe.registerProducer(producer, True)
    sent = [bytes([i]) * 1000 for i in range(200)]
    for data in sent:
        assert has_fired(pipe.write(data))
    assert producer.events == []
    assert pipe.in_memory == 0  # all of it is on disk
    pipe.close()
    got = []
    while data := result_of(pipe.read()):
        got.append(data)
    assert b"".join(got) == b"".join(sent)
    assert not pipe.holds_spool  # closed once read to the end


@pytest_twisted.ensureDeferred
async def test_buffered_pipe_thread_reader_after_writer_closed() -> None:
    pipe = Pipe(buffered=True)
    sent = random.Random(1).randbytes(1_000_003)
    for start in range(0, len(sent), 70_000):
        await pipe.write(sent[start : start + 70_000])
    await pipe.close()
    assert await deferToThread(pipe.r.read) == sent


@pytest_twisted.ensureDeferred
async def test_buffered_pipe_delivered_while_written() -> None:
    pipe = Pipe(buffered=True)
    transport = StringTransport()
    pipe.write(b"spooled ")
    delivered = pipe.deliver_to(transport)
    assert transport.value() == b"spooled "
    pipe.pauseProducing()
    pipe.write(b"more ")
    pipe.write(b"data")
    assert transport.value() == b"spooled "
    pipe.resumeProducing()
    pipe.close()
    await delivered
    assert transport.value() == b"spooled more data"


def test_buffered_pipe_abort() -> None:
    pipe = Pipe(buffered=True)
    pipe.write(b"x" * 100)
    pipe.close()
    pipe.abort(Boom())
    with pytest.raises(Boom):
        result_of(pipe.read())


# -- InputPipes and Pipes --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_input_pipes_thread_iteration_discards_unread_data() -> None:
    first = small_pipe(filename="a.txt")
    inputs = InputPipes(first)
    upstream = RecordingProducer()
    first.registerProducer(upstream, True)
    waiting = first.write(b"HEAD" + b"." * 20)
    assert upstream.events == ["pause"]
    second_wanted: defer.Deferred[None] = defer.Deferred()

    def job() -> list[tuple[str | None, bytes]]:
        seen = []
        for number, pipe in enumerate(inputs):
            if number == 0:
                seen.append((pipe.filename, pipe.r.read(4)))  # then moves on
                reactor.callFromThread(second_wanted.callback, None)
            else:
                seen.append((pipe.filename, pipe.r.read()))
        return seen

    running = deferToThread(job)
    await second_wanted
    await waiting  # the rest of the first file was discarded: the upload goes on
    assert upstream.events == ["pause", "resume"]
    first.write(b"rest of the first file, dropped")
    first.close()
    second = Pipe(filename="b.txt")
    inputs.add(second)
    second.write(b"second file")
    second.close()
    inputs.finish()
    assert await running == [("a.txt", b"HEAD"), ("b.txt", b"second file")]
    with pytest.raises(PipeError):
        inputs.add(Pipe())


@pytest_twisted.ensureDeferred
async def test_input_pipes_async_iteration() -> None:
    first = Pipe(filename="one")
    inputs = InputPipes(first)
    first.write(b"1" * 5)

    async def job() -> list[bytes]:
        seen = []
        async for pipe in inputs:
            seen.append(await pipe.read(2))
        return seen

    running = defer.Deferred.fromCoroutine(job())
    assert not running.called  # waiting for the second file
    assert first.state is PipeState.DISCARDED
    second = Pipe(filename="two")
    inputs.add(second)
    second.write(b"22")
    assert not running.called
    inputs.finish()
    assert await running == [b"11", b"22"]
    assert second.state is PipeState.DISCARDED


@pytest_twisted.ensureDeferred
async def test_input_pipes_failure_raises_where_iteration_would_end() -> None:
    first = Pipe()
    first.write(b"complete")
    first.close()
    inputs = InputPipes(first)
    got = []

    async def job() -> None:
        async for pipe in inputs:
            got.append(pipe)

    running = defer.Deferred.fromCoroutine(job())
    inputs.fail(Boom("client disconnected"))
    with pytest.raises(Boom):
        await running
    assert got == [first]
    late = Pipe()
    inputs.add(late)
    with pytest.raises(Boom):
        result_of(late.read())


def test_input_pipes_iteration_on_reactor_thread_would_block() -> None:
    inputs = InputPipes(Pipe())
    iterator = iter(inputs)
    next(iterator)
    with pytest.raises(RuntimeError, match="async for"):
        next(iterator)


def test_pipes_container() -> None:
    first, output = Pipe(), Pipe()
    inputs = InputPipes(first)
    pipes = Pipes(inputs=inputs, output=output)
    assert pipes.input is first
    assert list(pipes) == [first, output]
    assert Pipes().input is None and list(Pipes()) == []

    first.write(b"unread")
    output.write(b"result")
    pipes.close()
    assert result_of(output.read()) == b"result"
    assert result_of(output.read()) == b""
    assert first.state is PipeState.DISCARDED
    later = Pipe()
    inputs.add(later)
    assert later.state is PipeState.DISCARDED
    assert list(inputs) == [first, later]


# -- a big transfer --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_big_transfer_thread_writer_async_reader() -> None:
    size, chunk = 64 * 1024 * 1024, 64 * 1024
    block = random.Random(2).randbytes(1024 * 1024 + 7)
    expected = hashlib.sha256()
    pipe = Pipe()

    def job() -> None:
        view = memoryview(block)
        sent = 0
        while sent < size:
            start = sent % (len(block) - chunk)
            data = view[start : start + min(chunk, size - sent)]
            pipe.w.write(data)
            expected.update(data)
            sent += len(data)
        pipe.w.close()

    writing = deferToThread(job)
    got = hashlib.sha256()
    total = 0
    while data := await pipe.read():
        got.update(data)
        total += len(data)
    await writing
    assert total == size
    assert got.hexdigest() == expected.hexdigest()
