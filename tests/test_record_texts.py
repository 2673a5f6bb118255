"""
What a job's record derives from its arguments and its error (its
description, error, exception and C{exc_info}) is bounded, so that a call
with large arguments cannot make every finished job the daemon keeps many
times larger than the call.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest_twisted

from midjobs.errors import CallError
from midjobs.job import KEEP_FINISHED_ARGUMENTS, Job
from midjobs.texts import MAX_TEXT
from midjobs.service import Service, job

from test_plugin_habits import running


class EchoService(Service):
    namespace = "echo"

    @job(description=lambda text: f"Echo {text}")
    async def fail(self, job: Job, text: str) -> None:
        raise CallError(f"Cannot echo {text}")

    @job()
    async def describe(self, job: Job, text: str) -> None:
        job.set_description(text)


@pytest_twisted.ensureDeferred
async def test_the_texts_of_a_record_are_bounded(tmp_path: Path) -> None:
    async with running(tmp_path, EchoService) as middleware:
        text = "x" * 1_000_000 + "END"
        failed = await middleware.call("echo.fail", text)
        await failed.wait()
        record: dict[str, Any] = failed.to_record()
        for field in (record["description"], record["error"], record["exception"], record["exc_info"]["repr"]):
            assert len(field) <= MAX_TEXT
            # Cut in the middle: where it starts and how it ends both show.
            assert "…" in field and "END" in field[-100:]
        assert record["error"].startswith("[EFAULT] Cannot echo xxx")
        assert record["exception"].startswith("Traceback")
        described = await middleware.call("echo.describe", text)
        await described.wait()
        assert len(described.to_record()["description"]) == MAX_TEXT


class TakeService(Service):
    namespace = "take"

    @job()
    async def anything(self, job: Job, data: Any) -> None:
        raise CallError("not this")


@pytest_twisted.ensureDeferred
async def test_finished_jobs_with_large_arguments_are_kept_fewer(tmp_path: Path) -> None:
    """
    64 KiB of JSON made of small objects (C{[{}, {}, ...]}) is over a
    megabyte of Python objects: the finished jobs the daemon keeps in memory
    hold at most L{KEEP_FINISHED_ARGUMENTS} bytes of arguments (as JSON),
    the older ones leaving memory first, however many C{keep_finished} allows.
    """
    async with running(tmp_path, TakeService) as middleware:
        argument_json = "[" + ",".join(["{}"] * 21_000) + "]"
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(80):
                called = await middleware.call("take.anything", json.loads(argument_json))
                await called.wait()
            gc.collect()  # A failure's frames and its job refer to each other.
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # As objects, about 1.6 MB for each job kept: at most 64 of them.
        assert kept < 150_000_000, kept
        assert called.to_record()["arguments"] == [[{}] * 21_000]
        kept_large = sum(1 for job in middleware.jobs if job.method == "take.anything")
        assert 0 < kept_large <= KEEP_FINISHED_ARGUMENTS // 60_000
