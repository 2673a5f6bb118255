"""
One job lifecycle, in memory: the queue tells its registered observers
(L{IJobObserver}) of each job's addition, changes and end, in the order they
were registered, with the job in a named L{JobPhase}; nobody hears of a
job's creation or end before its store says it is durable; the excerpt of a
job's log is read in the thread pool, head and tail only.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from midjobs import log_excerpt
from midjobs.job import Job, JobPhase, JobsQueue, JobState, StoreRecorder
from midjobs.job_events import JobEvents
from midjobs.lifecycle import IJobObserver, IJobRecorder, JobRecord
from midjobs.texts import MAX_TEXT
from midjobs.log_excerpt import logs_excerpt, read_excerpt
from midjobs.service import JobOptions

from test_job_timeout import ThreadReactor


@implementer(IJobObserver)
class Told:
    """
    An observer that writes down what it is told: C{(job id, msg, record)}
    with C{msg} as C{core.get_jobs} sends it (an end is a C{changed}), and
    in C{calls} each call's name, job and phase and state at that moment.
    """

    def __init__(
        self,
        events: list[Any] | None = None,
        calls: list[Any] | None = None,
        name: str = "",
        listening: bool = True,
        read: bool = True,
    ) -> None:
        self.events = events if events is not None else []
        self.calls = calls if calls is not None else []
        self.name = name
        self._listening = listening
        #: Write down the job's record when none comes (as the event hub reads it).
        self._read = read

    def listening(self) -> bool:
        return self._listening

    def _note(self, call: str, msg: str, job: Job, record: JobRecord | None) -> None:
        if record is None and self._read:
            record = job.to_record()
        self.events.append((job.id, msg, record))
        self.calls.append((self.name, call, job.id, job.phase, job.state))

    def added(self, job: Job, record: JobRecord | None) -> None:
        self._note("added", "added", job, record)

    def changed(self, job: Job, record: JobRecord | None) -> None:
        self._note("changed", "changed", job, record)

    def ended(self, job: Job, record: JobRecord) -> None:
        self._note("ended", "changed", job, record)


class HeldStore:
    """
    An L{midjobs.store.IJobStore}'s writes, held: each durable write waits
    until the test fires its Deferred.
    """

    flush_interval = 0.2

    def __init__(self) -> None:
        self.created: list[tuple[int, Deferred[None]]] = []
        self.finished: list[tuple[JobRecord, Deferred[None]]] = []
        self.changes: list[int] = []

    def record_created(self, job_id: int, record: Callable[[], JobRecord]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.created.append((job_id, d))
        return d

    def record_changed(self, job_id: int, record: Callable[[], JobRecord]) -> None:
        self.changes.append(job_id)

    def note_id(self, job_id: int) -> None:
        pass

    def record_finished(self, record: JobRecord) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.finished.append((record, d))
        return d


def held_queue() -> tuple[JobsQueue, HeldStore, Told]:
    """
    A queue recording into a L{HeldStore}, with one L{Told} observer.
    """
    store = HeldStore()
    queue = JobsQueue(store=store)  # type: ignore[arg-type]  # duck-typed store
    told = Told()
    queue.observe(told)
    return queue, store, told


def quick(result: Any = "done") -> Callable[[Job], Any]:
    async def run(job: Job) -> Any:
        return result

    return run


def gated(gate: Deferred[None]) -> Callable[[Job], Any]:
    async def run(job: Job) -> str:
        await gate
        return "done"

    return run


def test_the_observers_are_interfaces_the_store_the_events_and_the_metrics_provide() -> None:
    assert verifyObject(IJobObserver, Told())
    assert verifyObject(IJobObserver, JobEvents(None))  # type: ignore[arg-type]  # never sends here
    assert verifyObject(IJobRecorder, StoreRecorder(HeldStore()))  # type: ignore[arg-type]  # duck-typed store


def test_observers_are_told_in_order_with_named_phases() -> None:
    reactor = MemoryReactorClock()
    queue = JobsQueue()
    calls: list[Any] = []
    queue.observe(Told(calls=calls, name="first"))
    queue.observe(Told(calls=calls, name="second"))
    gate: Deferred[None] = Deferred()
    job = Job(reactor, "t.gated", JobOptions(), gated(gate), [], is_async=True)
    assert job.phase is JobPhase.WAITING
    queue.add(job)
    assert job.phase is JobPhase.RUNNING and not job.ending
    gate.callback(None)
    assert job.phase is JobPhase.ENDED and job.ending and job.state is JobState.SUCCESS
    assert calls == [
        ("first", "added", job.id, JobPhase.WAITING, JobState.WAITING),
        ("second", "added", job.id, JobPhase.WAITING, JobState.WAITING),
        ("first", "changed", job.id, JobPhase.RUNNING, JobState.RUNNING),
        ("second", "changed", job.id, JobPhase.RUNNING, JobState.RUNNING),
        ("first", "ended", job.id, JobPhase.ENDED, JobState.SUCCESS),
        ("second", "ended", job.id, JobPhase.ENDED, JobState.SUCCESS),
    ]


def test_one_record_of_a_held_change_is_shared_by_every_observer() -> None:
    reactor = MemoryReactorClock()
    store = HeldStore()
    queue = JobsQueue(store=store)  # type: ignore[arg-type]  # duck-typed store
    first, second = Told(read=False), Told(read=False)
    queue.observe(first)
    queue.observe(second)
    queue.add(Job(reactor, "t.quick", JobOptions(), quick(), [], is_async=True))
    store.created[0][1].callback(None)
    store.finished[0][1].callback(None)
    assert [e[1] for e in first.events] == ["added", "changed", "changed"]
    assert all(a[2] is b[2] and a[2] is not None for a, b in zip(first.events, second.events))
    assert first.events[-1][2]["state"] == "SUCCESS" and first.events[-1][2]["result"] == "done"


def test_a_live_change_comes_without_a_record() -> None:
    reactor = MemoryReactorClock()
    queue = JobsQueue()
    told = Told(read=False)
    queue.observe(told)
    gate: Deferred[None] = Deferred()
    job = Job(reactor, "t.gated", JobOptions(), gated(gate), [], is_async=True)
    queue.add(job)
    job.set_progress(50)
    gate.callback(None)
    assert [(msg, record) for _, msg, record in told.events[:3]] == [("added", None), ("changed", None), ("changed", None)]
    assert told.events[-1][2]["state"] == "SUCCESS"


def test_no_record_is_built_for_a_change_nobody_listens_to(monkeypatch: Any) -> None:
    reactor = MemoryReactorClock()
    store = HeldStore()
    queue = JobsQueue(store=store)  # type: ignore[arg-type]  # duck-typed store
    told = Told(listening=False, read=False)
    queue.observe(told)
    job = Job(reactor, "t.quick", JobOptions(), quick(), [], is_async=True)
    built: list[JobRecord] = []
    real = job.to_record
    monkeypatch.setattr(job, "to_record", lambda **kw: built.append(real(**kw)) or built[-1])
    queue.add(job)
    store.created[0][1].callback(None)
    store.finished[0][1].callback(None)
    # The final record only: the store's and the observers' own.
    assert built == [store.finished[0][0]]
    assert [(msg, record) for _, msg, record in told.events[:2]] == [("added", None), ("changed", None)]
    assert told.events[2][2] is built[0]


def test_an_observer_that_raises_does_not_keep_the_others_from_hearing(log_events: list[dict[str, Any]]) -> None:
    @implementer(IJobObserver)
    class Broken(Told):
        def changed(self, job: Job, record: JobRecord | None) -> None:
            raise RuntimeError("broken observer")

    reactor = MemoryReactorClock()
    queue = JobsQueue()
    told = Told()
    queue.observe(Broken())
    queue.observe(told)
    job = Job(reactor, "t.quick", JobOptions(), quick(), [], is_async=True)
    queue.add(job)
    assert job.state is JobState.SUCCESS
    assert [e[1] for e in told.events] == ["added", "changed", "changed"]
    assert any("broken observer" in str(e.get("log_failure")) for e in log_events)


def test_a_transient_job_is_told_to_nobody() -> None:
    reactor = MemoryReactorClock()
    queue = JobsQueue(store=HeldStore())  # type: ignore[arg-type]  # duck-typed store
    told = Told()
    queue.observe(told)
    job = Job(reactor, "t.quick", JobOptions(transient=True), quick(), [], is_async=True)
    queue.add(job)
    assert job.state is JobState.SUCCESS and told.events == []


def test_nobody_hears_of_a_job_before_its_creation_is_durable() -> None:
    reactor = MemoryReactorClock()
    queue, store, told = held_queue()
    gate: Deferred[None] = Deferred()
    job = Job(reactor, "t.gated", JobOptions(), gated(gate), [], is_async=True)
    answered: list[Job] = []
    queue.add(job).addCallback(answered.append)
    # It runs already, but its creation is not durable: nobody knows of it.
    assert job.state is JobState.RUNNING and answered == [] and told.events == []
    assert list(queue.listed()) == []
    [(job_id, created)] = store.created
    created.callback(None)
    # Then the observers hear what they missed, each change with its record of the time.
    assert answered == [job]
    assert [(msg, record["state"]) for _, msg, record in told.events] == [("added", "WAITING"), ("changed", "RUNNING")]


def test_nobody_hears_of_a_job_s_end_before_it_is_durable() -> None:
    reactor = MemoryReactorClock()
    queue, store, told = held_queue()
    gate: Deferred[None] = Deferred()
    job = Job(reactor, "t.gated", JobOptions(), gated(gate), [], is_async=True)
    queue.add(job)
    store.created[0][1].callback(None)
    waited: list[Any] = []
    job.wait().addCallback(waited.append)
    gate.callback(None)
    # Its end is being recorded: it says so, its state is still RUNNING, nobody is told.
    [(record, finished)] = store.finished
    assert record["state"] == "SUCCESS" and record["result"] == "done" and record["time_finished"] is not None
    assert job.phase is JobPhase.ENDING and job.ending and job.state is JobState.RUNNING
    assert waited == [] and [msg for _, msg, _ in told.events] == ["added", "changed"]
    finished.callback(None)
    assert job.phase is JobPhase.ENDED and job.state is JobState.SUCCESS and waited == ["done"]
    assert told.events[-1][2] is record


def test_a_job_that_ends_before_its_creation_is_durable_is_told_in_order() -> None:
    reactor = MemoryReactorClock()
    queue, store, told = held_queue()
    job = Job(reactor, "t.quick", JobOptions(), quick(), [], is_async=True)
    answered: list[Job] = []
    queue.add(job).addCallback(answered.append)
    assert job.phase is JobPhase.ENDING and told.events == []
    # The store applies writes in order: the creation first, then the end.
    store.created[0][1].callback(None)
    assert answered == [] and [msg for _, msg, _ in told.events] == ["added", "changed"]
    store.finished[0][1].callback(None)
    assert answered == [job]
    assert [(msg, record["state"]) for _, msg, record in told.events] == [
        ("added", "WAITING"),
        ("changed", "RUNNING"),
        ("changed", "SUCCESS"),
    ]


def test_a_job_whose_creation_cannot_be_recorded_is_told_to_nobody() -> None:
    reactor = MemoryReactorClock()
    queue, store, told = held_queue()
    gate: Deferred[None] = Deferred()
    job = Job(reactor, "t.gated", JobOptions(), gated(gate), [], is_async=True)
    failed: list[Any] = []
    queue.add(job).addErrback(failed.append)
    store.created[0][1].errback(OSError("disk full"))
    assert failed and job.phase is JobPhase.ENDING
    store.finished[0][1].callback(None)
    assert job.state is JobState.ABORTED and told.events == []


def test_a_large_log_s_excerpt_is_read_in_the_thread_pool(tmp_path: Path) -> None:
    reactor = ThreadReactor()
    queue = JobsQueue()
    told = Told()
    queue.observe(told)

    def write(job: Job) -> None:
        for n in range(200_000):
            job.logs_fd.write(b"line %d\n" % n)

    job = Job(reactor, "t.logs", JobOptions(logs=True), write, [], is_async=False, logs_dir=tmp_path)
    queue.add(job)
    on_result, run, args = reactor.threads.calls[0]
    on_result(True, run(*args))
    # The method returned: the log is closed and its excerpt is read in the pool, not here.
    assert job.phase is JobPhase.ENDING and job.logs_excerpt is None and job.logs_fd is None
    on_result, read, args = reactor.threads.calls[1]
    assert read is read_excerpt
    on_result(True, read(*args))
    assert job.phase is JobPhase.ENDED and job.state is JobState.SUCCESS
    excerpt = job.logs_excerpt.splitlines()
    assert excerpt[:2] == ["line 0", "line 1"] and excerpt[10] == "... 199980 more lines ..."
    assert excerpt[-1] == "line 199999"
    assert told.events[-1][2]["logs_excerpt"] == job.logs_excerpt


def test_the_excerpt_of_a_large_log_reads_its_head_and_tail_only(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "big.log"
    text = "".join(f"line {n}\n" for n in range(100_000))
    path.write_text(text)
    kept: list[int] = []
    real_open = open

    class Counting:
        def __init__(self, f: Any) -> None:
            self._f = f

        def read(self, size: int = -1) -> bytes:
            data: bytes = self._f.read(size)
            kept.append(len(data))
            return data

        def __getattr__(self, name: str) -> Any:
            return getattr(self._f, name)

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: Any) -> None:
            self._f.close()

    monkeypatch.setattr(log_excerpt, "open", lambda *a: Counting(real_open(*a)), raising=False)
    assert read_excerpt(path) == logs_excerpt(text)
    # Read a chunk at a time: never more than one chunk in memory for the count.
    assert max(kept) <= 64 * 1024


@pytest.mark.parametrize("ending", ["", "\n", "\n\n"])
def test_the_excerpt_matches_the_whole_text_s_at_every_size(tmp_path: Path, monkeypatch: Any, ending: str) -> None:
    monkeypatch.setattr(log_excerpt, "_CHUNK", 16)
    path = tmp_path / "log"
    for count in range(0, 40):
        text = "\n".join(f"{n}" * (n % 7) for n in range(count)) + ending
        path.write_bytes(text.encode())
        assert read_excerpt(path) == logs_excerpt(text), (count, text)
    os.unlink(path)


@pytest.mark.parametrize("line", [20_000_000, 2_000_000])
def test_the_excerpt_of_a_log_of_long_lines_is_bounded(tmp_path: Path, line: int) -> None:
    """
    A log of a few very long lines (one line of 20 MB; twenty of 2 MB) is
    not read into memory whole, and its excerpt, which a record carries, is
    at most L{MAX_TEXT} characters: its start and its end.
    """
    path = tmp_path / "long.log"
    with open(path, "w") as f:
        for n in range(20_000_000 // line):
            f.write(f"{n}" + "x" * (line - 20) + f"end of line {n}\n")
    tracemalloc.start()
    try:
        excerpt = read_excerpt(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, peak
    assert len(excerpt) <= MAX_TEXT
    assert excerpt.startswith("0xxx") and excerpt.rstrip().endswith(f"end of line {20_000_000 // line - 1}")
