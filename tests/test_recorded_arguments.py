"""
A job's record shows its arguments as it was called with them: what the
method does to them afterwards (the plugins' habit of C{data.pop(...)})
changes nothing recorded, as in the original daemon.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from midjobs.job import Job
from midjobs.middleware import Middleware
from midjobs.service import Service, job, secret


class MutatingService(Service):
    namespace = "mutating"

    @job()
    async def coroutine(self, job: Job, data: dict[str, Any]) -> None:
        data.pop("name")
        data["key"] = "decrypted-secret"
        data["options"]["more"] = True

    @job()
    def thread(self, job: Job, data: dict[str, Any]) -> None:
        data.clear()

    @secret("data.password")
    @job()
    async def with_secret(self, job: Job, data: dict[str, Any]) -> None:
        data["options"]["key"] = "decrypted-secret"


@pytest.mark.parametrize("method", ["coroutine", "thread", "with_secret"])
@pytest_twisted.ensureDeferred
async def test_what_a_job_does_to_its_arguments_is_not_recorded(tmp_path: Path, method: str) -> None:
    middleware = Middleware(reactor, tmp_path)
    middleware.add_service(MutatingService)
    await middleware.start()
    try:
        called = await middleware.call(f"mutating.{method}", {"name": "x", "password": "p", "options": {}})
        await called.wait(raise_error=True)
        (data,) = called.to_record()["arguments"]
        shown = "********" if method == "with_secret" else "p"
        assert data == {"name": "x", "password": shown, "options": {}}
    finally:
        await middleware.stop()
