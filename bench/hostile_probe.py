"""
The administrator's probe of bench/hostile.py, in a process of its own.

The attackers' clients can be heavy on the CPU (framing 20,000 pipelined
calls, parsing 40,000 answers, holding 1,100 WebSockets).  Sharing a reactor
with them, the probe waited for the benchmark's own stalls and the figure
blamed the daemon for them; here it has a process and a reactor to itself.

    python bench/hostile_probe.py --url ws://127.0.0.1:PORT/api/current \\
        --user admin --password ... --kind session|fresh [--seconds 10] \\
        [--interval 0.1] [--timeout 5] [--warmup 5] [--start-on-stdin]

A probe is C{core.ping}, a trivial job (C{core.job_test}, answered when it
ends) and an indexed C{core.get_jobs} (by id), on one logged-in connection
kept open (C{session}), or on a new connection that first logs in
(C{fresh}: the login is timed apart and not counted in the probe's latency,
and a refused login fails the probe).  A probe taking longer than
C{--timeout} fails; probes never overlap (a late one delays the next one).

Output, one JSON line each: C{{"ready": true}} after C{--warmup} probes that
are not recorded; then, if C{--start-on-stdin}, nothing until a line comes on
standard input (the probe ends if standard input closes); then, after
C{--seconds} of probes, C{{"latencies": [...], "failures": [...], "logins":
[...], "lags": [...], "wall": s, "cpu": s}} (seconds; a failed probe's time
is in C{latencies} too; C{lags}, how late this process's timer fired before
each probe that waited for its turn, shows when the probe itself waited for a
CPU; C{cpu} is this process's own CPU time over the window).

L{ProbeProcess} runs this script from bench/hostile.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(BENCH_DIR))

from twisted.internet import defer, protocol  # noqa: E402
from twisted.internet.interfaces import IHalfCloseableProtocol  # noqa: E402
from twisted.internet.task import deferLater  # noqa: E402
from zope.interface import implementer  # noqa: E402

__all__ = ["FRESH_KIND", "SESSION_KIND", "Probe", "ProbeProcess"]

#: The C{--kind} values.
SESSION_KIND = "session"
FRESH_KIND = "fresh"


# The probe itself (in its own process).


class Probe:
    """
    The administrator's calls every C{interval}: each probe's latency, or why it failed.
    """

    def __init__(self, reactor: Any, url: str, user: str, password: str, kind: str, timeout: float) -> None:
        self.reactor = reactor
        self.url = url
        self.credentials = (user, password)
        self.kind = kind
        self.timeout = timeout
        self.session: Any = None
        self.latencies: list[float] = []
        self.failures: list[str] = []
        #: How long each fresh probe's C{auth.login} took (not counted in its latency:
        #: checking a password costs its key derivation, by design).
        self.logins: list[float] = []
        #: How late this process's timer woke it for each probe that waited
        #: for its turn: more than a millisecond or so, and this process
        #: itself waited for a CPU (the probe's latencies then include it).
        self.lags: list[float] = []
        self._login_time = 0.0

    async def _logged_in(self) -> Any:
        from midjobs.client import connect

        client = await connect(self.url, reactor=self.reactor, timeout=self.timeout, call_timeout=self.timeout)
        try:
            started = time.perf_counter()
            if not await client.login(*self.credentials):
                raise RuntimeError("the admin's login was refused")
            self._login_time = time.perf_counter() - started
            await client.call("core.set_options", {"legacy_jobs": False})
        except BaseException:
            client.close()
            raise
        return client

    async def _calls(self, client: Any) -> None:
        if await client.call("core.ping") != "pong":
            raise RuntimeError("core.ping did not answer pong")
        if await client.call("core.job_test") is not True:
            raise RuntimeError("core.job_test did not succeed")
        await client.call("core.get_jobs", [["id", "=", 1]])

    async def _once(self) -> None:
        if self.kind == FRESH_KIND:
            client = await self._logged_in()
            try:
                await self._calls(client)
            finally:
                client.close()
            return
        if self.session is None or not self.session.connected:
            self.session = await self._logged_in()
        await self._calls(self.session)

    async def once(self, record: bool = True) -> None:
        started = time.perf_counter()
        self._login_time = 0.0
        try:
            await defer.Deferred.fromCoroutine(self._once()).addTimeout(self.timeout, self.reactor)
        except Exception as e:
            if self.session is not None and self.kind == SESSION_KIND:
                self.session.close()
                self.session = None
            if record:
                self.failures.append(f"{type(e).__name__}: {e}"[:120])
                self.latencies.append(time.perf_counter() - started)
            return
        if record:
            self.latencies.append(time.perf_counter() - started - self._login_time)
            if self.kind == FRESH_KIND:
                self.logins.append(self._login_time)

    async def run(self, until: float, interval: float) -> None:
        next_tick = time.perf_counter()
        while time.perf_counter() < until:
            await self.once()
            next_tick += interval
            wait = next_tick - time.perf_counter()
            if wait > 0:
                await deferLater(self.reactor, wait, lambda: None)
                self.lags.append(time.perf_counter() - next_tick)
            else:
                next_tick = time.perf_counter()  # a late probe delays the next one, never piles them up

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


@implementer(IHalfCloseableProtocol)
class _Control(protocol.Protocol):
    """
    Standard input and output: C{started} fires at the first line read,
    C{gone} when standard input closes (whoever started the probe is gone;
    standard output stays open), C{closed} once both are closed.
    """

    def __init__(self) -> None:
        self.started: defer.Deferred[None] = defer.Deferred()
        self.gone: defer.Deferred[None] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        if b"\n" in data and not self.started.called:
            self.started.callback(None)

    def send(self, message: dict[str, Any]) -> None:
        self.transport.write(json.dumps(message).encode() + b"\n")

    def readConnectionLost(self) -> None:
        if not self.gone.called:
            self.gone.callback(None)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        self.readConnectionLost()
        if not self.closed.called:
            self.closed.callback(None)


async def probe_main(reactor: Any, args: argparse.Namespace) -> None:
    from twisted.internet.stdio import StandardIO

    control = _Control()
    StandardIO(control, reactor=reactor)
    probe = Probe(reactor, args.url, args.user, args.password, args.kind, args.timeout)
    try:
        for _ in range(args.warmup):  # warm up, and check that the probe works at all
            await probe.once(record=False)
        control.send({"ready": True})
        if args.start_on_stdin:
            first = await defer.DeferredList([control.started, control.gone], fireOnOneCallback=True)
            if first[1] == 1:
                return  # standard input closed: nobody waits for the figures
        cpu = time.process_time()
        started = time.perf_counter()
        await probe.run(started + args.seconds, args.interval)
        control.send(
            {
                "latencies": probe.latencies,
                "failures": probe.failures,
                "logins": probe.logins,
                "lags": probe.lags,
                "wall": time.perf_counter() - started,
                "cpu": time.process_time() - cpu,
            }
        )
    finally:
        probe.close()
        control.transport.loseConnection()  # what was sent is written before it closes
        await control.closed.addTimeout(5, reactor).addErrback(lambda _: None)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the daemon's WebSocket, ws://host:port/api/current")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--kind", choices=[SESSION_KIND, FRESH_KIND], default=SESSION_KIND)
    p.add_argument("--seconds", type=float, default=10, help="how long to probe")
    p.add_argument("--interval", type=float, default=0.1, help="a probe starts every this many seconds")
    p.add_argument("--timeout", type=float, default=5, help="a probe taking longer fails")
    p.add_argument("--warmup", type=int, default=5, help="probes made first and not recorded")
    p.add_argument("--start-on-stdin", action="store_true", help="after the warm-up, wait for a line on stdin")
    return p.parse_args(argv)


# How bench/hostile.py runs the probe.


class ProbeProcess(protocol.ProcessProtocol):
    """
    This script as a subprocess: L{start} spawns it, L{ready} fires once it
    has warmed up, L{go} starts its window, L{result} fires with its figures
    (the decoded last line), L{ended} when it exits.
    """

    def __init__(self, reactor: Any, log_path: str) -> None:
        self.reactor = reactor
        self.log = open(log_path, "wb")
        self._buffer = b""
        self._messages: list[dict[str, Any]] = []
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.result: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.pid: int | None = None

    def start(
        self, url: str, credentials: tuple[str, str], kind: str, seconds: float, interval: float, timeout: float
    ) -> None:
        argv = [
            sys.executable, SCRIPT, "--url", url, "--user", credentials[0], "--password", credentials[1],
            "--kind", kind, "--seconds", str(seconds), "--interval", str(interval), "--timeout", str(timeout),
            "--start-on-stdin",
        ]  # fmt: skip
        transport = self.reactor.spawnProcess(self, sys.executable, argv, env=dict(os.environ))
        self.pid = transport.pid

    def go(self) -> None:
        self.transport.write(b"go\n")

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            message = json.loads(line)
            if message.get("ready") and not self.ready.called:
                self.ready.callback(None)
            elif "latencies" in message and not self.result.called:
                self.result.callback(message)

    def errReceived(self, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()

    def processEnded(self, reason: Any) -> None:
        self.log.close()
        failure = RuntimeError(f"the probe process ended ({reason.getErrorMessage()}); see {self.log.name}")
        for waiting in (self.ready, self.result):
            if not waiting.called:
                waiting.errback(failure)
        self.ended.callback(None)

    def stop(self) -> defer.Deferred[None]:
        """
        End the probe (its stdin closes; killed if it lingers); fires when it has exited.
        """
        for waiting in (self.ready, self.result):
            waiting.addErrback(lambda _: None)  # nobody waits for them any more
        if not self.ended.called:
            try:
                self.transport.closeStdin()
            except Exception:
                pass

            def kill() -> None:
                if not self.ended.called:
                    self.transport.signalProcess("KILL")

            call = self.reactor.callLater(5, kill)
            self.ended.addBoth(lambda r: call.cancel() if call.active() else None)
        return self.ended


if __name__ == "__main__":
    from twisted.internet.task import react

    arguments = parse(sys.argv[1:])
    react(lambda reactor: defer.Deferred.fromCoroutine(probe_main(reactor, arguments)))
