"""
system.info over a real WebSocket, and the system.debug archive read from its output pipe.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import io
import json
import platform
import tarfile

import pytest_twisted
import twisted

from midjobs import wire_json
from midjobs.client import Client
from midjobs.job import Job, JobState
from midjobs.pipe import Pipe, Pipes
from midjobs.plugins.system import REDACTED, redacted

from conftest import RunningDaemon


async def drain(pipe: Pipe) -> bytes:
    data = bytearray()
    while chunk := await pipe.read():
        data += chunk
    return bytes(data)


async def debug_archive(daemon: RunningDaemon) -> tuple[Job, tarfile.TarFile]:
    pipe = daemon.middleware.pipe()
    job = await daemon.middleware.call("system.debug", pipes=Pipes(output=pipe))
    data = await drain(pipe)
    await job.wait()
    return job, tarfile.open(fileobj=io.BytesIO(data), mode="r:xz")


def member(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    assert f is not None
    return f.read()


@pytest_twisted.ensureDeferred
async def test_info(admin_client: Client, daemon: RunningDaemon) -> None:
    info = await admin_client.call("system.info")
    assert info["version"] == importlib.metadata.version("midjobs")
    assert info["python"] == platform.python_version()
    assert info["twisted"] == twisted.__version__
    assert isinstance(info["boot_time"], datetime.datetime)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert info["boot_time"] <= now
    assert 0 <= info["uptime_seconds"] < 600
    settings = daemon.middleware.settings
    assert info["listeners"] == [*settings.listen, f"unix:{daemon.socket_path}"]
    assert info["state_dir"] == str(daemon.state_dir)
    assert info["node"] == settings.node
    later = await admin_client.call("system.info")
    assert later["uptime_seconds"] >= info["uptime_seconds"]
    assert later["boot_time"] == info["boot_time"]


@pytest_twisted.ensureDeferred
async def test_debug_archive(admin_client: Client, daemon: RunningDaemon) -> None:
    logged = await admin_client.call_job("sample.logging_job", 3)
    assert logged == 3
    job, tar = await debug_archive(daemon)
    assert job.state is JobState.SUCCESS, job.error
    assert job.progress["percent"] == 100

    names = tar.getnames()
    assert names[:3] == ["version.json", "config.json", "jobs.json"]
    logs = [n for n in names if n.startswith("logs/")]
    assert logs and all(n.endswith(".log") for n in logs)

    version = wire_json.loads(member(tar, "version.json"))
    assert version["version"] == importlib.metadata.version("midjobs")
    assert isinstance(version["boot_time"], datetime.datetime)

    config = json.loads(member(tar, "config.json"))
    assert config["state_dir"] == str(daemon.state_dir)
    assert config["socket"] == daemon.socket_path
    assert config["listen"] == list(daemon.middleware.settings.listen)
    assert config["filesystem_roots"] == [str(daemon.state_dir / "files")]

    jobs = wire_json.loads(member(tar, "jobs.json"))
    by_method = {j["method"]: j for j in jobs}
    logging_job = by_method["sample.logging_job"]
    assert logging_job["state"] == "SUCCESS"
    assert logging_job["arguments"] == [3]
    assert by_method["system.debug"]["state"] == "RUNNING"
    log_name = f"logs/{logging_job['id']}.log"
    assert log_name in names
    assert member(tar, log_name) == b"line 0\nline 1\nline 2\n"


@pytest_twisted.ensureDeferred
async def test_debug_without_job_logs(daemon: RunningDaemon) -> None:
    job, tar = await debug_archive(daemon)
    assert job.state is JobState.SUCCESS, job.error
    assert tar.getnames() == ["version.json", "config.json", "jobs.json"]


def test_secrets_are_redacted() -> None:
    config = {
        "state_dir": "/srv",
        "keep_finished_jobs": 10,
        "db_password": "hunter2",
        "nested": {"API_KEY": "k", "tokens": ["a"], "items": [{"client_secret": "s", "name": "n"}]},
    }
    assert redacted(config) == {
        "state_dir": "/srv",
        "keep_finished_jobs": 10,
        "db_password": REDACTED,
        "nested": {"API_KEY": REDACTED, "tokens": REDACTED, "items": [{"client_secret": REDACTED, "name": "n"}]},
    }


@pytest_twisted.ensureDeferred
async def test_debug_is_downloadable(admin_client: Client) -> None:
    methods = await admin_client.call("core.get_methods")
    assert methods["system.debug"]["downloadable"] is True
    assert methods["system.info"]["job"] is False
