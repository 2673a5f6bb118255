"""
What a plugin ported from the original daemon does behaves as it did there:
a record shows the arguments the job was called with, whatever the method
does to them afterwards (the plugins' habit of C{data.pop(...)}); a thread
job reads back the progress it reported; a failed command, a lone
validation error, C{@pass_app(...)}, C{call_sync} of a plain method from a
thread job, C{wrap} and the log excerpt are what the original makes them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
import traceback
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from midjobs.errors import CallError, ValidationError
from midjobs.job import Job
from midjobs.log_excerpt import logs_excerpt
from midjobs.rpc._jsonrpc import error_for
from midjobs.middleware import Middleware
from midjobs.service import Service, job, pass_app, secret


@contextlib.asynccontextmanager
async def running(tmp_path: Path, *services: type[Service]) -> AsyncIterator[Middleware]:
    """
    A started middleware with C{services}, stopped after the block.
    """
    middleware = Middleware(reactor, tmp_path)
    for service in services:
        middleware.add_service(service)
    await middleware.start()
    try:
        yield middleware
    finally:
        await middleware.stop()


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
    async with running(tmp_path, MutatingService) as middleware:
        called = await middleware.call(f"mutating.{method}", {"name": "x", "password": "p", "options": {}})
        await called.wait(raise_error=True)
        (data,) = called.to_record()["arguments"]
        shown = "********" if method == "with_secret" else "p"
        assert data == {"name": "x", "password": shown, "options": {}}
        # The method got a copy, as in the original: the job's own arguments stay too.
        assert called.args == [{"name": "x", "password": "p", "options": {}}]


COMMAND = ["sh", "-c", "echo out; echo err >&2; exit 3"]


class CommandService(Service):
    namespace = "command"

    @job()
    def run(self, job: Job) -> None:
        subprocess.run(COMMAND, check=True, capture_output=True)


@pytest_twisted.ensureDeferred
async def test_a_failed_command_says_what_it_wrote(tmp_path: Path) -> None:
    """
    A C{subprocess.CalledProcessError} (C{run(..., check=True)}) reaches the
    caller as a C{CallError} naming the command, its exit code and its
    output, as in the original daemon: a job's error, a method's answer.
    """
    async with running(tmp_path, CommandService) as middleware:
        called = await middleware.call("command.run")
        await called.wait()
        said = "Command sh -c 'echo out; echo err >&2; exit 3' failed (code 3):\nout\nerr"
        assert called.error == f"[EFAULT] {said}"
        assert called.exc_info["type"] == "CallError"
        assert "CalledProcessError" in called.exception
    try:
        subprocess.run(COMMAND, check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        data = json.loads(error_for(e, 1).response())["error"]["data"]
    assert (data["error"], data["reason"]) == (errno.EFAULT, said)
    assert "CalledProcessError" in data["trace"]["formatted"]


class ReportingService(Service):
    namespace = "reporting"

    @job()
    def read_back(self, job: Job) -> list[Any]:
        job.set_progress(30, "step one")
        seen = [job.progress["percent"], job.progress["description"]]
        job.set_progress(description="step two")
        seen += [job.progress["percent"], job.progress["description"]]
        job.set_description("described")
        return [*seen, job.description]


@pytest_twisted.ensureDeferred
async def test_a_thread_job_reads_back_what_it_reported(tmp_path: Path) -> None:
    """
    As in the original daemon: a thread job's C{set_progress} and
    C{set_description} change the job before they return (its events are
    sent from the reactor thread).
    """
    async with running(tmp_path, ReportingService) as middleware:
        called = await middleware.call("reporting.read_back")
        assert await called.wait(raise_error=True) == [30, "step one", 30, "step two", "described"]


class AppService(Service):
    namespace = "app"

    @pass_app()
    async def called(self, app: Any, x: int) -> list[Any]:
        return [app, x]

    @pass_app(require=True)
    async def required(self, app: Any) -> bool:
        return True

    @pass_app(message_id=True)
    async def numbered(self, app: Any, message_id: Any, x: int) -> list[Any]:
        return [app, message_id, x]

    @pass_app(message_id=True)
    @job()
    async def numbered_job(self, app: Any, job: Job, x: int) -> list[Any]:
        # As in the original: a job gets no message id.
        return [app, x]


@pytest_twisted.ensureDeferred
async def test_the_forms_of_pass_app(tmp_path: Path) -> None:
    """
    C{@pass_app()}, C{@pass_app(require=True)} and
    C{@pass_app(message_id=True)} mean what they mean in the original.
    """
    async with running(tmp_path, AppService) as middleware:
        assert await middleware.call("app.called", 1) == [None, 1]
        with pytest.raises(CallError, match="`app` is required"):
            await middleware.call("app.required")
        assert await middleware.call("app.numbered", 2) == [None, None, 2]
        numbered = await middleware.call("app.numbered_job", 3)
        assert await numbered.wait(raise_error=True) == [None, 3]
        # What callers send is what follows them.
        for name in ("app.numbered", "app.numbered_job"):
            assert [p.name for p in middleware.methods[name].signature.parameters] == ["x"]


class ValidatingService(Service):
    namespace = "validating"

    @job()
    async def job(self, job: Job) -> None:
        raise ValidationError("data.name", "Bad name")


@pytest_twisted.ensureDeferred
async def test_one_validation_error_is_a_validation_error(tmp_path: Path) -> None:
    """
    A single C{ValidationError} raised (not in a C{ValidationErrors}) is
    reported as validation errors are, as in the original daemon: the job's
    C{exc_info} says C{VALIDATION} with its C{[attribute, errmsg, errno]},
    a method's answer is C{-32602}.
    """
    async with running(tmp_path, ValidatingService) as middleware:
        failed = await middleware.call("validating.job")
        await failed.wait()
        assert failed.exc_info["type"] == "VALIDATION"
        assert failed.exc_info["extra"] == [["data.name", "Bad name", errno.EINVAL]]
    answer = json.loads(error_for(ValidationError("data.name", "Bad name"), 1).response())["error"]
    assert answer["code"] == -32602
    assert answer["data"]["extra"] == [["data.name", "Bad name", errno.EINVAL]]


class WrappingService(Service):
    namespace = "wrapping"

    @job()
    async def child(self, job: Job, percent: int) -> None:
        job.set_progress(percent)

    @job()
    async def parent(self, job: Job) -> str:
        job.set_progress(5, "Parent step")
        await job.wrap(await self.middleware.call("wrapping.child", 50))
        return str(job.progress["description"])


@pytest_twisted.ensureDeferred
async def test_wrap_keeps_the_description_a_sub_job_does_not_give(tmp_path: Path) -> None:
    """
    As in the original daemon, where an empty description is no report: a
    sub-job without one leaves the wrapping job's own.
    """
    async with running(tmp_path, WrappingService) as middleware:
        parent = await middleware.call("wrapping.parent")
        assert await parent.wait(raise_error=True) == "Parent step"


class NestedService(Service):
    namespace = "nested"

    def plain(self, x: int) -> int:
        return x + 1

    @job()
    def outer(self, job: Job) -> int:
        return int(self.middleware.call_sync("nested.plain", 1))


@pytest_twisted.ensureDeferred
async def test_a_thread_job_calls_a_plain_method_in_its_own_thread(tmp_path: Path) -> None:
    """
    As in the original daemon: C{call_sync} of a plain (not job, not async)
    method runs it in the calling thread, so a thread job that does so
    needs no other thread of the pool, even when the pool has no other.
    """
    pool = reactor.getThreadPool()
    sizes = (pool.min, pool.max)
    pool.adjustPoolsize(1, 1)
    try:
        async with running(tmp_path, NestedService) as middleware:
            outer = await middleware.call("nested.outer")
            assert await outer.wait(timeout=10, raise_error=True) == 2
    finally:
        pool.adjustPoolsize(*sizes)


def test_a_log_excerpt_is_written_as_the_original_writes_it() -> None:
    """
    The first and last ten lines with their line breaks, and a line that
    counts those between.
    """
    assert logs_excerpt("one\ntwo\n") == "one\ntwo\n"
    text = "".join(f"line {i}\n" for i in range(25))
    expected = "".join(f"line {i}\n" for i in range(10)) + "... 5 more lines ...\n"
    assert logs_excerpt(text) == expected + "".join(f"line {i}\n" for i in range(15, 25))


class FailingService(Service):
    namespace = "failing"

    @job()
    async def deep(self, job: Job) -> None:
        _raise_deep()


def _raise_deep() -> None:
    raise CallError("deep down")


@pytest_twisted.ensureDeferred
async def test_a_failed_job_raises_from_where_it_failed(tmp_path: Path) -> None:
    """
    Each waiter gets the job's error with the frames where the method
    raised it, and the waiters before add none to it.
    """
    async with running(tmp_path, FailingService) as middleware:
        failed = await middleware.call("failing.deep")
        await failed.wait()
        depths = []
        for _ in range(3):
            with pytest.raises(CallError) as raised:
                failed.outcome(raise_error=True)
            frames = traceback.extract_tb(raised.value.__traceback__)
            assert frames[-1].name == "_raise_deep"
            depths.append(len(frames))
        assert depths[0] == depths[1] == depths[2]
