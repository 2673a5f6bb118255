"""
C{system.*}: what the daemon is and how it runs, and a debug archive to download.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import io
import os
import platform
import socket
import stat as stat_module
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import twisted
from twisted.internet.threads import blockingCallFromThread

from .. import wire_json
from ..job import Job, JobAborted
from ..progress import JobProgressBuffer
from ..service import Service, job, read_only

if TYPE_CHECKING:
    from ..config import Settings
    from ..middleware import Middleware

__all__ = ["SystemService", "redacted"]

#: A settings key holding any of these (in any case) has its value hidden in debug archives.
SECRET_WORDS = ("password", "secret", "key", "token")
REDACTED = "********"


def midjobs_version() -> str:
    """
    The installed version of the midjobs package, or C{"unknown"}.
    """
    try:
        return importlib.metadata.version("midjobs")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def redacted(value: Any) -> Any:
    """
    C{value} with the value of every dict key that looks secret (see
    L{SECRET_WORDS}) replaced by L{REDACTED}, at any depth.
    """
    if isinstance(value, dict):
        return {
            k: REDACTED if any(w in str(k).lower() for w in SECRET_WORDS) else redacted(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redacted(v) for v in value]
    return value


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> bool:
    """
    Add the regular file C{path} as C{name}; skip anything else (and a file
    that vanished).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat_module.S_ISREG(st.st_mode):
            return False
        info = tarfile.TarInfo(name)
        info.size = st.st_size
        info.mtime = int(st.st_mtime)
        info.mode = 0o644
        tar.addfile(info, f)
    return True


class SystemService(Service):
    """
    The daemon itself.
    """

    namespace = "system"

    def __init__(self, middleware: Middleware) -> None:
        super().__init__(middleware)
        self._started = time.monotonic()
        self._boot_time = datetime.datetime.now(datetime.timezone.utc)

    async def setup(self) -> None:
        self._started = time.monotonic()
        self._boot_time = datetime.datetime.now(datetime.timezone.utc)

    @read_only
    async def info(self) -> dict[str, Any]:
        """
        The daemon: C{version} (of midjobs), C{boot_time} (when the daemon
        started), C{uptime_seconds}, C{python} and C{twisted} versions,
        C{hostname}, C{node} (its name in its cluster: C{[cluster] node}),
        C{pid}, C{state_dir} and C{listeners} (the endpoint strings it
        listens on, the UNIX socket last).
        """
        settings: Settings | None = self.middleware.settings
        listeners: list[str] = []
        if settings is not None:
            listeners = [*settings.listen, settings.socket_endpoint]
        return {
            "version": midjobs_version(),
            "boot_time": self._boot_time,
            "uptime_seconds": time.monotonic() - self._started,
            "python": platform.python_version(),
            "twisted": twisted.__version__,
            "hostname": socket.gethostname(),
            "node": self.middleware.jobs.node,
            "pid": os.getpid(),
            "state_dir": str(self.middleware.state_dir),
            "listeners": listeners,
        }

    @read_only
    async def shutdown_status(self) -> dict[str, Any]:
        """
        Whether the daemon is stopping: C{phase} (C{"SERVING"}; C{"DRAINING"}
        while running jobs are given C{[jobs] drain_timeout} seconds to end;
        C{"ABORTING"} while those left are aborted and recorded),
        C{jobs_left} (the jobs it waits for) and C{seconds_left} (until they
        are aborted; C{null} unless draining).
        """
        return self.middleware.drain.status()

    def _config(self) -> dict[str, Any]:
        settings: Settings | None = self.middleware.settings
        if settings is None:
            return {}
        config = attrs.asdict(settings)
        config["socket"] = settings.socket_path
        config["filesystem_roots"] = list(settings.filesystem_root_paths)
        # Without the password it may hold.
        config["database_url"] = settings.database_display if settings.database_url is not None else None
        shown: dict[str, Any] = redacted(config)
        return shown

    def _jobs(self) -> str:
        return wire_json.lenient_dumps([job.to_record() for job in self.middleware.jobs])

    @read_only
    @job(pipes=["output"], abortable=True, description=lambda: "Collecting debug information")
    def debug(self, job: Job) -> None:
        """
        Write a debug archive (an xz-compressed tar) to the output pipe:
        C{version.json} (C{system.info}), C{config.json} (the settings in
        force, secrets hidden), C{jobs.json} (every job listed) and
        C{logs/<id>.log} (every job log).
        """
        reactor = self.middleware.reactor
        assert job.pipes.output is not None  # the job declares its output pipe
        output = job.pipes.output.w
        job.set_progress(0, "Collecting system information")
        info = blockingCallFromThread(reactor, self.middleware.call, "system.info")
        jobs = blockingCallFromThread(reactor, self._jobs)
        logs_dir = self.middleware.state_dir / "jobs"
        try:
            logs = sorted(p for p in logs_dir.iterdir() if p.suffix == ".log")
        except FileNotFoundError:
            logs = []

        progress = JobProgressBuffer(job)
        try:
            tar = tarfile.open(fileobj=output, mode="w|xz")
            _add_bytes(tar, "version.json", wire_json.lenient_dumps(info).encode())
            progress.set_progress(5, "Writing the configuration")
            _add_bytes(tar, "config.json", wire_json.lenient_dumps(self._config()).encode())
            progress.set_progress(10, "Writing the jobs")
            _add_bytes(tar, "jobs.json", jobs.encode())
            for i, path in enumerate(logs):
                if job.aborted.is_set():
                    raise JobAborted()
                progress.set_progress(15 + 80 * i / len(logs), f"Writing job logs ({i} of {len(logs)})")
                _add_file(tar, f"logs/{path.name}", path)
            progress.set_progress(95, "Finishing the archive")
            tar.close()
            output.close()
            progress.set_progress(100, "Done")
        finally:
            progress.flush()
