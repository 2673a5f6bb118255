"""
What a job's record derives from its arguments and its error (its
description, error, exception and C{exc_info}) is bounded, so that a call
with large arguments cannot make every finished job the daemon keeps many
times larger than the call.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest_twisted

from midjobs.errors import CallError
from midjobs.job import MAX_TEXT, Job
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
async def test_a_finished_job_keeps_its_arguments_compactly(tmp_path: Path) -> None:
    """
    64 KiB of JSON made of small objects (C{[{}, {}, ...]}) is over a
    megabyte of Python objects: a finished job the daemon keeps holds its
    arguments as their JSON, and still shows them.
    """
    async with running(tmp_path, TakeService) as middleware:
        argument_json = "[" + ",".join(["{}"] * 21_000) + "]"
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(10):
                called = await middleware.call("take.anything", json.loads(argument_json))
                await called.wait()
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # As objects, about 1.6 MB a job; as JSON, 63 KB.
        assert kept < 10 * 300_000, kept
        assert called.to_record()["arguments"] == [[{}] * 21_000]
        assert called.args == [[{}] * 21_000]
