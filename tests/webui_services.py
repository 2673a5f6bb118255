"""
Services for the web task manager's browser tests and for C{bench/webui.py},
loaded into the daemon as a --plugin module.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import deferLater

from midjobs.interfaces import ISession
from midjobs.job import Job
from midjobs.service import Service, job, pass_app, roles

#: The role that lets the tests' plain users start L{WebUIService.user_job}.
USER_ROLE = "WEBUI_USER"


class WebUIService(Service):
    namespace = "webui"

    @job(logs=True, description=lambda count, interval=0.1: f"Writing {count} log lines")
    def log_lines(self, job: Job, count: int, interval: float = 0.1) -> int:
        """
        Write C{count} log lines (C{line 0}, C{line 1}, ...), one every
        C{interval} seconds, reporting progress.  Returns C{count}.
        """
        for i in range(count):
            if job.aborted.wait(interval):
                break
            job.logs_fd.write(f"line {i}\n".encode())
            job.set_progress(100 * (i + 1) / count, f"line {i}")
        return count

    @roles(USER_ROLE)
    @job(abortable=True, description=lambda description, sleep=0: description)
    async def user_job(self, job: Job, description: str, sleep: float = 0) -> bool:
        """
        A job plain users (with the role C{WEBUI_USER}) may start: wait
        C{sleep} seconds, reporting progress, then return C{True}.
        """
        reactor = self.middleware.reactor
        steps = max(1, int(sleep * 4))
        for i in range(steps):
            if sleep:
                await deferLater(reactor, sleep / steps, lambda: None)
            job.set_progress(100 * (i + 1) / steps)
        return True

    @job()
    async def quick(self, job: Job, n: int = 0) -> int:
        """
        End at once with C{n}.
        """
        return n

    @job(abortable=True, description=lambda seconds, rate=10.0, name="": f"Ticking {name}".strip())
    async def ticker(self, job: Job, seconds: float, rate: float = 10.0, name: str = "") -> int:
        """
        Change the progress C{rate} times a second for C{seconds} seconds;
        return how many changes were made.
        """
        reactor = self.middleware.reactor
        steps = max(1, int(seconds * rate))
        for i in range(steps):
            await deferLater(reactor, 1 / rate, lambda: None)
            job.set_progress(i % 101, f"tick {i}")
        return steps

    @job(abortable=True, description=lambda seconds: "Working without a percentage")
    async def silent(self, job: Job, seconds: float) -> bool:
        """
        Run C{seconds} seconds without ever reporting a percentage (its
        progress stays the daemon's initial C{{"percent": 0}}).
        """
        await deferLater(self.middleware.reactor, seconds, lambda: None)
        return True

    @job(pipes=["input"], abortable=True)
    async def slow_sink(self, job: Job, chunk: int = 65536, interval: float = 0.1) -> int:
        """
        Read the upload C{chunk} bytes every C{interval} seconds (so that a
        large one stays in progress for a while); return the bytes read.
        """
        assert job.pipes.input is not None
        total = 0
        while data := await job.pipes.input.read(chunk):
            total += len(data)
            await deferLater(self.middleware.reactor, interval, lambda: None)
        return total

    @job(description=lambda seconds: "Not abortable")
    async def unabortable(self, job: Job, seconds: float) -> bool:
        """
        Wait C{seconds} seconds; its method does not allow aborting (only a
        full administrator's force abort stops it).
        """
        await deferLater(self.middleware.reactor, seconds, lambda: None)
        return True

    @job(abortable=True, description=lambda extra, seconds=60: "Moving bytes")
    async def transfer(self, job: Job, extra: dict, seconds: float = 60) -> bool:
        """
        Report half done with C{extra} as the progress's C{extra} (the transfer
        fields C{bytes}, C{total_bytes}, C{rate}, C{eta_seconds}), then wait
        C{seconds} seconds.
        """
        job.set_progress(50, "Copying", extra)
        await deferLater(self.middleware.reactor, seconds, lambda: None)
        return True

    @pass_app
    async def load(
        self, app: ISession, total: int = 1000, changing: int = 20, rate: float = 10.0, seconds: float = 300.0
    ) -> list[int]:
        """
        Start C{total} jobs as the caller: C{total - changing} that end at once,
        then C{changing} tickers that change their progress C{rate} times a
        second for C{seconds}.  Returns the tickers' ids.
        """
        for i in range(total - changing):
            await self.middleware.call_from(app, "webui.quick", [i])
        tickers = []
        for i in range(changing):
            ticker: Any = await self.middleware.call_from(app, "webui.ticker", [seconds, rate, f"#{i}"])
            tickers.append(ticker.id)
        return tickers
