"""
Webhooks (C{[notify] webhooks}): a job's end POSTed, signed, to real local
receivers (twisted.web sites on 127.0.0.1) from a daemon in this process:
the signature, the filters, the redaction of secrets, the retries with
back-off against a receiver that fails for a while, giving up, the bound on
the outbox, and a notification pending when the daemon stops delivered by
the next one.  Nothing sleeps to synchronise: the tests wait for requests
the receivers get, and for the notifier's state.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from midjobs.arguments import REDACTED
from midjobs.config import ConfigError, Settings
from midjobs.daemon import Daemon
from midjobs.notify import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

SECRET = "webhook-key"
#: Answer a request with nothing, until the test (or the teardown) lets it go.
HANG = None


@attrs.frozen
class Received:
    """
    One request a receiver got.
    """

    path: str
    query: bytes
    headers: dict[str, str]
    authorization: str | None
    body: bytes
    #: When it came, on the reactor's clock.
    at: float
    #: Whether its signature is good (for L{SECRET}, now).
    signed: bool

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver(Resource):
    """
    A webhook receiver: records each request and answers it with the next
    status of C{answers} (200 once they are used up), or not at all for L{HANG}.
    """

    isLeaf = True

    def __init__(self, answers: list[int | None] | None = None) -> None:
        super().__init__()
        self.answers = list(answers or [])
        self.requests: list[Received] = []
        self.hanging: list[Request] = []
        self._waiters: list[tuple[int, Deferred[None]]] = []

    def render_POST(self, request: Request) -> Any:
        body = request.content.read()
        headers = {}
        for name in (SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_HEADER, "Content-Type"):
            value = request.getHeader(name)
            if value is not None:
                headers[name] = value
        self.requests.append(
            Received(
                path=request.path.decode(),
                query=request.uri.partition(b"?")[2],
                headers=headers,
                authorization=request.getHeader("Authorization"),
                body=body,
                at=reactor.seconds(),
                signed=verify(SECRET.encode(), headers, body, reactor.seconds()),
            )
        )
        for count, waiter in list(self._waiters):
            if len(self.requests) >= count:
                self._waiters.remove((count, waiter))
                waiter.callback(None)
        status = self.answers.pop(0) if self.answers else 200
        if status is HANG:
            self.hanging.append(request)
            return NOT_DONE_YET
        request.setResponseCode(status)
        return b"ok" if status == 200 else b"not now"

    def received(self, count: int) -> Deferred[None]:
        """
        Fires once C{count} requests came.
        """
        d: Deferred[None] = Deferred()
        if len(self.requests) >= count:
            d.callback(None)
        else:
            self._waiters.append((count, d))
        return d


@attrs.define
class Receivers:
    """
    Receivers started by a test, on one site: C{/<name>} is C{receivers[name]}.
    """

    port: Any = None
    by_name: dict[str, Receiver] = attrs.Factory(dict)

    def add(self, name: str, answers: list[int | None] | None = None) -> Receiver:
        receiver = self.by_name[name] = Receiver(answers)
        return receiver

    def url(self, name: str, userinfo: str = "", query: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self.port.getHost().port}/{name}{query}"


class _Root(Resource):
    def __init__(self, receivers: Receivers) -> None:
        super().__init__()
        self._receivers = receivers

    def getChild(self, path: bytes, request: Request) -> Resource:
        request.prepath, request.postpath = [], [path, *request.postpath]
        return self._receivers.by_name[path.decode()]


@pytest_twisted.async_yield_fixture
async def receivers() -> AsyncIterator[Receivers]:
    found = Receivers()
    site = Site(_Root(found))
    found.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    yield found
    for receiver in found.by_name.values():
        for request in receiver.hanging:
            request.transport.abortConnection()
    await found.port.stopListening()


def webhook(url: str, **options: Any) -> dict[str, Any]:
    return {"url": url, "secret": SECRET, **options}


@pytest.fixture
def notify_settings(settings: Settings) -> Callable[..., Settings]:
    """
    The test daemon's settings with C{[notify]} set from a TOML-like table:
    C{webhooks} (a list of tables) and the other keys.
    """

    def make(**notify: Any) -> Settings:
        notify = {"retry_delay": 0.05, "retry_max_delay": 0.2, **notify}
        changed = settings.updated_from({"notify": notify}, "test")
        return attrs.evolve(changed, plugins=(*settings.plugins, "test_webhooks_services"))

    return make


@pytest_twisted.async_yield_fixture
async def start() -> AsyncIterator[Callable[[Settings], Awaitable[Daemon]]]:
    """
    Starts daemons in this process; those still running are stopped after the test.
    """
    started: list[Daemon] = []

    async def start(settings: Settings) -> Daemon:
        daemon = Daemon(settings, reactor)
        daemon.startService()
        await daemon.ready
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.running:
            await daemon.stopService()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """
    Wait until C{predicate()} holds, looking every few milliseconds.
    """
    deadline = reactor.seconds() + timeout
    while not predicate():
        assert reactor.seconds() < deadline, "timed out"
        await deferLater(reactor, 0.005, lambda: None)


def settled(daemon: Daemon) -> Callable[[], bool]:
    """
    Whether the daemon's outbox is empty: every notification delivered, given up or dropped.
    """
    return lambda: daemon.notifier is not None and daemon.notifier.idle


def sample(daemon: Daemon, name: str, **labels: str) -> float | None:
    return daemon.middleware.metrics.registry.get_sample_value(name, labels or None)


async def run_job(daemon: Daemon, method: str, *params: Any) -> Any:
    job = await daemon.middleware.call(method, *params)
    await job.wait()
    return job


def messages(events: list[dict[str, Any]]) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(event) for event in events if event.get("log_namespace", "").startswith("midjobs")]


# What a receiver gets.


@pytest_twisted.ensureDeferred
async def test_a_job_end_is_posted_signed(
    receivers: Receivers, notify_settings: Callable[..., Settings], start: Any
) -> None:
    hook = receivers.add("hook")
    daemon = await start(notify_settings(webhooks=[webhook(receivers.url("hook"))]))
    job = await run_job(daemon, "core.job_test", {"description": "told"})
    await hook.received(1)
    (got,) = hook.requests
    assert got.signed
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers[SIGNATURE_HEADER].startswith("sha256=")
    body = got.json
    assert body["event"] == "job.ended"
    assert body["delivery"] == got.headers[DELIVERY_HEADER]
    record = body["job"]
    assert (record["id"], record["method"], record["state"]) == (job.id, "core.job_test", "SUCCESS")
    assert record["description"] == "told" and record["result"] is True
    assert set(record["time_finished"]) == {"$date"}
    await until(settled(daemon))
    assert sample(daemon, "midjobs_webhook_deliveries_total", outcome="delivered") == 1
    assert sample(daemon, "midjobs_webhook_pending") == 0


@pytest_twisted.ensureDeferred
async def test_a_signature_does_not_verify_with_another_key_or_body(
    receivers: Receivers, notify_settings: Callable[..., Settings], start: Any
) -> None:
    hook = receivers.add("hook")
    daemon = await start(notify_settings(webhooks=[webhook(receivers.url("hook"))]))
    await run_job(daemon, "core.job_test")
    await hook.received(1)
    (got,) = hook.requests
    now = reactor.seconds()
    assert verify(SECRET.encode(), got.headers, got.body, now)
    assert not verify(b"another key", got.headers, got.body, now)
    assert not verify(SECRET.encode(), got.headers, got.body + b" ", now)
    # A replay: the same request long after.
    assert not verify(SECRET.encode(), got.headers, got.body, now + 3600)
    older = {**got.headers, TIMESTAMP_HEADER: str(int(got.headers[TIMESTAMP_HEADER]) - 1)}
    assert not verify(SECRET.encode(), older, got.body, now)


@pytest_twisted.ensureDeferred
async def test_webhooks_are_told_of_the_methods_and_states_they_filter(
    receivers: Receivers, notify_settings: Callable[..., Settings], start: Any
) -> None:
    everything = receivers.add("everything")
    failures = receivers.add("failures")
    tests_ok = receivers.add("tests_ok")
    daemon = await start(
        notify_settings(
            webhooks=[
                webhook(receivers.url("everything")),
                webhook(receivers.url("failures"), states=["FAILED", "ABORTED"]),
                webhook(receivers.url("tests_ok"), methods=["core.job_test"], states=["SUCCESS"]),
            ]
        )
    )
    ok = await run_job(daemon, "core.job_test")
    failed_test = await run_job(daemon, "core.job_test", {"error": "no"})
    failed = await run_job(daemon, "sample.failing_job", "it failed")
    ok_thread = await run_job(daemon, "sample.thread_job", 1)
    await until(settled(daemon))

    def told(receiver: Receiver) -> list[tuple[int, str]]:
        return sorted((r.json["job"]["id"], r.json["job"]["state"]) for r in receiver.requests)

    assert told(everything) == [
        (ok.id, "SUCCESS"), (failed_test.id, "FAILED"), (failed.id, "FAILED"), (ok_thread.id, "SUCCESS"),
    ]  # fmt: skip
    assert told(failures) == [(failed_test.id, "FAILED"), (failed.id, "FAILED")]
    assert told(tests_ok) == [(ok.id, "SUCCESS")]
    assert sample(daemon, "midjobs_webhook_deliveries_total", outcome="delivered") == 7


@pytest_twisted.ensureDeferred
async def test_secrets_are_redacted(
    receivers: Receivers, notify_settings: Callable[..., Settings], start: Any
) -> None:
    hook = receivers.add("hook")
    daemon = await start(notify_settings(webhooks=[webhook(receivers.url("hook"))]))
    await run_job(daemon, "hooks.log_in", "alice", "hunter2-password")
    await hook.received(1)
    (got,) = hook.requests
    assert b"hunter2" not in got.body
    record = got.json["job"]
    assert record["arguments"] == ["alice", REDACTED]
    assert record["result"] == {"username": "alice", "token": REDACTED}


# A receiver that fails.


@pytest_twisted.ensureDeferred
async def test_a_failing_receiver_is_retried_with_back_off_until_it_answers(
    receivers: Receivers, notify_settings: Callable[..., Settings], start: Any, log_events: list[dict[str, Any]]
) -> None:
    hook = receivers.add("hook", [500, 503, 500])
    url = receivers.url("hook", userinfo="bob:pass-in-url", query="?token=query-secret")
    daemon = await start(notify_settings(webhooks=[webhook(url)], retry_delay=0.05, retry_max_delay=0.2))
    job = await run_job(daemon, "core.job_test")
    await hook.received(4)
    await until(settled(daemon))
    attempts = hook.requests
    assert len(attempts) == 4
    # One notification: one delivery id, each attempt signed anew.
    assert len({a.headers[DELIVERY_HEADER] for a in attempts}) == 1
    assert all(a.signed for a in attempts)
    # Basic authentication and the query from the URL.
    assert attempts[0].authorization == "Basic " + base64.b64encode(b"bob:pass-in-url").decode()
    assert attempts[0].query == b"token=query-secret"
    # Waits of 0.05, 0.1 and 0.2 s (at least) between the attempts.
    gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2, gaps
    assert sample(daemon, "midjobs_webhook_deliveries_total", outcome="failed") == 3
    assert sample(daemon, "midjobs_webhook_deliveries_total", outcome="delivered") == 1
    failures = [m for m in messages(log_events) if "failed (attempt" in m]
    assert len(failures) == 3
    plain = f"http://127.0.0.1:{receivers.port.getHost().port}/hook"
    assert failures[0] == (
        f"Webhook {plain}: delivery {attempts[0].headers[DELIVERY_HEADER]} of job {job.id} failed (attempt 1): "
        "HTTP 500 Internal Server Error; next attempt in 0.05 s"
    )
    everything = "\n".join(messages(log_events))
    assert "pass-in-url" not in everything and "query-secret" not in everything


@pytest_twisted.ensureDeferred
async def test_a_receiver_that_is_down_gets_the_notification_once_up(
    receivers: Receivers, notify_settings: Callable[..., Settings], start: Any, log_events: list[dict[str, Any]]
) -> None:
    # Nothing listens on that port yet.
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(Resource()))
    number = port.getHost().port
    await port.stopListening()
    daemon = await start(notify_settings(webhooks=[webhook(f"http://127.0.0.1:{number}/late")]))
    await run_job(daemon, "core.job_test")
    await until(lambda: (sample(daemon, "midjobs_webhook_deliveries_total", outcome="failed") or 0) >= 2)
    assert any("Connection was refused" in m for m in messages(log_events))
    late = Receiver()
    port = await TCP4ServerEndpoint(reactor, number, interface="127.0.0.1").listen(Site(late))
    try:
        await late.received(1)
        await until(settled(daemon))
        assert late.requests[0].signed
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_notification_is_given_up_after_its_attempts(
    receivers: Receivers, notify_settings: Callable[..., Settings], start: Any, log_events: list[dict[str, Any]]
) -> None:
    hook = receivers.add("hook", [500] * 10)
    daemon = await start(notify_settings(webhooks=[webhook(receivers.url("hook"))], attempts=3))
    job = await run_job(daemon, "core.job_test")
    await until(settled(daemon))
    assert len(hook.requests) == 3
    assert sample(daemon, "midjobs_webhook_deliveries_total", outcome="failed") == 2
    assert sample(daemon, "midjobs_webhook_deliveries_total", outcome="gave_up") == 1
    (line,) = [m for m in messages(log_events) if "gave up" in m]
    assert f"of job {job.id} after 3 attempt(s)" in line and line.endswith("HTTP 500 Internal Server Error")


@pytest_twisted.ensureDeferred
async def test_a_receiver_that_never_answers_times_out(
    receivers: Receivers, notify_settings: Callable[..., Settings], start: Any, log_events: list[dict[str, Any]]
) -> None:
    hook = receivers.add("hook", [HANG])
    daemon = await start(notify_settings(webhooks=[webhook(receivers.url("hook"), timeout=0.2)]))
    await run_job(daemon, "core.job_test")
    await hook.received(2)
    await until(settled(daemon))
    assert any("failed (attempt 1): no answer within 0.2 s" in m for m in messages(log_events))


@pytest_twisted.ensureDeferred
async def test_the_outbox_drops_the_oldest_past_its_limit(
    receivers: Receivers, notify_settings: Callable[..., Settings], start: Any, log_events: list[dict[str, Any]]
) -> None:
    # A receiver that holds every request: nothing is ever delivered.
    hook = receivers.add("hook", [HANG] * 10)
    daemon = await start(
        notify_settings(webhooks=[webhook(receivers.url("hook"), timeout=60)], outbox=2, deliveries=1)
    )
    jobs = [await run_job(daemon, "core.job_test") for _ in range(5)]
    await until(lambda: sample(daemon, "midjobs_webhook_deliveries_total", outcome="dropped") == 3)
    assert daemon.notifier is not None and daemon.notifier.pending == 2
    assert sample(daemon, "midjobs_webhook_pending") == 2
    dropped = [m for m in messages(log_events) if "outbox full" in m]
    assert [f"of job {job.id} to" in line for line, job in zip(dropped, jobs)] == [True] * 3
    # One delivery at once: the receiver holds one request.
    assert len(hook.requests) == 1


# Across a restart.


@pytest_twisted.ensureDeferred
async def test_a_pending_notification_is_delivered_after_a_restart(
    receivers: Receivers, notify_settings: Callable[..., Settings], start: Any
) -> None:
    hook = receivers.add("hook", [HANG])
    settings = notify_settings(webhooks=[webhook(receivers.url("hook"), timeout=60)])
    settings = attrs.evolve(settings, job_history=False)
    daemon = await start(settings)
    job = await run_job(daemon, "core.job_test")
    await hook.received(1)
    # Stopped while the attempt waits for its answer.
    await daemon.stopService()
    daemon = await start(settings)
    await hook.received(2)
    await until(settled(daemon))
    first, second = hook.requests
    assert first.headers[DELIVERY_HEADER] == second.headers[DELIVERY_HEADER]
    assert second.json["job"]["id"] == job.id and second.signed


# The configuration.


@pytest.mark.parametrize(
    "table, message",
    [
        ({"url": "ftp://example.com/x", "secret": "k"}, "must be an http:// or https:// URL, not 'ftp://example.com/x'"),
        ({"url": "http://", "secret": "k"}, "names no host"),
        ({"url": "https://example.com/"}, "needs either a secret or a secret_file"),
        ({"url": "https://example.com/", "secret": "k", "secret_file": "/k"}, "needs either a secret or a secret_file"),
        ({"url": "https://example.com/", "secret": "k", "states": ["RUNNING"]}, "states must list some of"),
        ({"url": "https://example.com/", "secret": "k", "timeout": 0}, "timeout must be a number"),
        ({"url": "https://example.com/", "secret": "k", "retries": 3}, "unknown key retries"),
        ({"url": "https://example.com/", "secret_file": "/nonexistent/key"}, "cannot read /nonexistent/key"),
    ],
)
def test_bad_webhooks_are_refused_at_load(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings().updated_from({"notify": {"webhooks": [table]}}, "midjobs.toml")
    assert message in str(raised.value)
    assert str(raised.value).startswith("midjobs.toml: notify.webhooks[0]")


def test_webhooks_in_toml(tmp_path: Path) -> None:
    key = tmp_path / "webhook.key"
    key.write_text("from-a-file\n")
    config = tmp_path / "midjobs.toml"
    config.write_text(
        f"""
[notify]
outbox = 50

[[notify.webhooks]]
url = "https://user:pw@hooks.example.com/midjobs?token=t"
secret_file = "{key}"
methods = ["backup.run"]
states = ["FAILED"]
timeout = 2.5

[[notify.webhooks]]
url = "http://127.0.0.1:8080/"
secret = "inline"
"""
    )
    settings = Settings.from_toml(config)
    first, second = settings.webhooks
    assert first.url == "https://hooks.example.com/midjobs?token=t" and first.auth == ("user", "pw")
    assert first.display_url == "https://hooks.example.com/midjobs"
    assert first.secret == b"from-a-file"
    assert (first.methods, first.states, first.timeout) == ({"backup.run"}, {"FAILED"}, 2.5)
    assert second.secret == b"inline" and second.states == {"SUCCESS", "FAILED", "ABORTED"}
    assert settings.notify_outbox == 50
    assert "pw" not in repr(first) and "from-a-file" not in repr(first)
