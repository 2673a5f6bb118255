"""
L{StoreRecorder.ending}: a job's end is recorded, and the job ends once the
store's write is durable, or once it failed (logged): never before, and once.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Iterator, cast

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher

from midjobs.job import StoreRecorder
from midjobs.lifecycle import JobRecord
from midjobs.store import StoreClosed


class FinishedWrites:
    """
    The one write a L{StoreRecorder} makes of a job's end, held until the test fires it.
    """

    def __init__(self) -> None:
        self.written: list[tuple[JobRecord, Deferred[None]]] = []

    def record_finished(self, record: JobRecord) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.written.append((record, d))
        return d


class Job:
    id = 7
    method = "core.job_test"


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def ending(store: FinishedWrites) -> list[str]:
    ended: list[str] = []
    recorder = StoreRecorder(store)  # type: ignore[arg-type]  # only its end is written here
    recorder.ending(Job(), {"id": 7, "state": "SUCCESS"}, lambda: ended.append("ended"))  # type: ignore[arg-type]
    return ended


def test_the_job_ends_once_its_end_is_durable(logged: list[LogEvent]) -> None:
    store = FinishedWrites()
    ended = ending(store)
    [(record, written)] = store.written
    assert record == {"id": 7, "state": "SUCCESS"} and ended == []
    written.callback(None)
    assert ended == ["ended"]
    assert not [e for e in logged if e.get("log_namespace") == "midjobs.job"]


@pytest.mark.parametrize(
    ("error", "level"),
    [(sqlite3.OperationalError("disk I/O error"), LogLevel.error), (StoreClosed("closed"), LogLevel.info)],
)
def test_a_failed_end_write_is_logged_and_the_job_ends_all_the_same(
    logged: list[LogEvent], error: Exception, level: Any
) -> None:
    store = FinishedWrites()
    ended = ending(store)
    store.written[0][1].errback(error)
    assert ended == ["ended"]
    [event] = [e for e in logged if e.get("log_namespace") == "midjobs.job"]
    assert event["log_level"] is level and event["job_id"] == 7 and event["state"] == "SUCCESS"
