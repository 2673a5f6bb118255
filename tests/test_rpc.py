"""
Conformance of the WebSocket JSON-RPC 2.0 endpoint to docs/protocol.rst.

The tests talk to a real daemon over real sockets through L{RawProtocol}, a
bare Autobahn client that sends exactly the text frames a test gives it, so
they can send what the midjobs client never would.  They cover what a user's
calls go through end to end: notifications that run jobs, logins, jobs old
and new style, events and subscriptions.  After each bad input they check
that the same connection (when it should stay open) and a fresh one still
work.  The framing (broken JSON, batches, ids, message sizes, the parser's
robustness), the error answers of calls and the limit on calls in flight are
tested in memory, in C{test_protocol_jsonrpc.py}.

The daemon also loads C{tests/rpc_services.py}, whose C{rpc.hold} and
C{rpc.gated} wait until the test opens a named gate: calls stay in flight
for exactly as long as a test needs, without timers.
"""

from __future__ import annotations

import datetime
import errno
import json
import uuid
from typing import Any, Callable
from urllib.parse import urlsplit

import attrs
import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint

from midjobs import wire_json
from midjobs.errors import CallError

import rpc_services
from conftest import ADMIN

#: The longest any single wait may take before the test fails.
TIMEOUT = 10

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
TOO_MANY_CALLS = -32000
METHOD_CALL_ERROR = -32001
#: Every error code of docs/protocol.rst.
ERROR_CODES = frozenset(
    {PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR, TOO_MANY_CALLS, METHOD_CALL_ERROR}
)
#: The fixed messages of docs/protocol.rst, by code.
ERROR_MESSAGES = {
    METHOD_NOT_FOUND: "Method does not exist",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal error",
    TOO_MANY_CALLS: "Maximum number of concurrent calls (20) has exceeded",
    METHOD_CALL_ERROR: "Method call error",
}
ENOMETHOD = 201
ENOTAUTHENTICATED = 207
ERRNO_NAMES = {**errno.errorcode, ENOMETHOD: "ENOMETHOD", ENOTAUTHENTICATED: "ENOTAUTHENTICATED"}

#: The fields of a job record (docs/protocol.rst).
JOB_FIELDS = frozenset(
    {
        "id", "message_ids", "method", "arguments", "transient", "description", "abortable",
        "logs_path", "logs_excerpt", "progress", "result", "result_encoding_error", "error",
        "exception", "exc_info", "state", "time_started", "time_finished", "credentials", "node",
    }
)
JOB_STATES = ("WAITING", "RUNNING", "SUCCESS", "FAILED", "ABORTED")

DEFAULT_OPTIONS = {"legacy_jobs": True, "private_methods": False, "py_exceptions": False}

ANONYMOUS_LIMIT = 8 * 1024
AUTHENTICATED_LIMIT = 64 * 1024


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_loads(text: str | bytes) -> Any:
    """
    Parse JSON as RFC 8259 has it: no C{NaN}, C{Infinity} or C{-Infinity}.
    """
    return json.loads(text, parse_constant=_reject_constant)


def same_id(a: Any, b: Any) -> bool:
    """
    Whether two request ids are the same JSON value (C{1} is not C{true}).
    """
    return type(a) is type(b) and a == b


def is_response(message: Any) -> bool:
    return isinstance(message, dict) and "id" in message and "method" not in message


def is_event(message: Any, job_id: int | None = None) -> bool:
    """
    Whether C{message} is a C{core.get_jobs} collection_update (about C{job_id}).
    """
    return (
        isinstance(message, dict)
        and message.get("method") == "collection_update"
        and message["params"].get("collection") == "core.get_jobs"
        and (job_id is None or message["params"].get("id") == job_id)
    )


class RawProtocol(WebSocketClientProtocol):
    """
    A WebSocket client that sends raw text frames and collects every message.

    @ivar messages: every message received, parsed.
    @ivar not_strict_json: the payloads that were not strict JSON (C{NaN}...).
    @ivar closed_with: fires with C{(wasClean, code, reason)} when the connection ends.
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[RawProtocol] = Deferred()
        self.closed_with: Deferred[tuple[bool, int | None, str | None]] = Deferred()
        self.messages: list[Any] = []
        self.not_strict_json: list[bytes] = []
        self.sent_ids: list[Any] = []
        self._waiters: list[tuple[Callable[[Any], bool], Deferred[Any]]] = []
        self._next_id = 0

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        assert not isBinary, payload
        try:
            message = strict_loads(payload)
        except ValueError:
            self.not_strict_json.append(payload)
            message = json.loads(payload)
        self.messages.append(message)
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(message):
                self._waiters.remove(waiter)
                d.callback(message)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(reason))
        self.closed_with.callback((wasClean, code, reason))
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(ConnectionError(f"connection closed: {code} {reason}"))

    # Sending.

    def send_text(self, text: str | bytes) -> None:
        """
        Send one text frame as is (bytes go unchecked, even invalid UTF-8).
        """
        payload = text.encode("utf-8") if isinstance(text, str) else text
        self.sendMessage(payload, isBinary=False)

    def send_json(self, message: Any) -> None:
        if isinstance(message, dict) and "id" in message:
            self.sent_ids.append(message["id"])
        self.send_text(json.dumps(message, ensure_ascii=False))

    def new_id(self) -> str:
        self._next_id += 1
        return f"r{self._next_id}"

    # Receiving.

    def wait_new(self, predicate: Callable[[Any], bool], timeout: float = TIMEOUT) -> Deferred[Any]:
        """
        The first message received from now on for which C{predicate} holds.
        """
        d: Deferred[Any] = Deferred(self._forget)
        self._waiters.append((predicate, d))
        d.addTimeout(timeout, reactor)
        return d

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = TIMEOUT) -> Deferred[Any]:
        """
        The first message, received already or to come, for which C{predicate} holds.
        """
        for message in self.messages:
            if predicate(message):
                return succeed(message)
        return self.wait_new(predicate, timeout)

    def _forget(self, d: Deferred[Any]) -> None:
        self._waiters = [w for w in self._waiters if w[1] is not d]

    def response(self, request_id: Any, timeout: float = TIMEOUT) -> Deferred[Any]:
        """
        The response to C{request_id}, received already or to come.
        """
        return self.wait_for(lambda m: is_response(m) and same_id(m["id"], request_id), timeout)

    def responses(self, request_id: Any) -> list[Any]:
        """
        Every response received so far to C{request_id}.
        """
        return [m for m in self.messages if is_response(m) and same_id(m["id"], request_id)]

    async def request(self, method: Any, params: Any = None, *, id: Any = None) -> Any:
        """
        Send a request (a fresh id unless given) and return its whole response.
        """
        request_id = self.new_id() if id is None else id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        d = self.wait_new(lambda m: is_response(m) and same_id(m["id"], request_id))
        self.send_json(message)
        return await d

    async def call(self, method: str, *params: Any) -> Any:
        """
        Send a request and return its result; fail the test on an error.
        """
        response = await self.request(method, list(params))
        assert "error" not in response, response
        return check_result(response, response["id"])

    async def send_and_receive(self, text: str | bytes) -> Any:
        """
        Send one frame and return the next response (for messages whose id the server cannot read).
        """
        d = self.wait_new(is_response)
        self.send_text(text)
        return await d

    def notify(self, method: str, params: list[Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send_json(message)

    async def close(self) -> None:
        if not self.closed_with.called:
            self.sendClose(1000)
        await self.closed_with


async def connect_raw(url: str) -> RawProtocol:
    """
    A raw connection to C{ws://host:port/api/current} or C{ws+unix:///path}.
    """
    if url.startswith("ws+unix://"):
        endpoint = UNIXClientEndpoint(reactor, url[len("ws+unix://"):], timeout=TIMEOUT)
        ws_url = "ws://localhost/api/current"
    else:
        parts = urlsplit(url)
        endpoint = TCP4ClientEndpoint(reactor, parts.hostname, parts.port, timeout=TIMEOUT)
        ws_url = url
    factory = WebSocketClientFactory(ws_url)
    factory.protocol = RawProtocol
    # No limits on this side: the tests send and receive oversized messages on purpose.
    factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0, closeHandshakeTimeout=TIMEOUT)
    protocol = await endpoint.connect(factory)
    await protocol.opened.addTimeout(TIMEOUT, reactor)
    return protocol


async def login(conn: RawProtocol) -> RawProtocol:
    assert await conn.call("auth.login", *ADMIN) is True
    return conn


# Checking responses to the letter.


def check_envelope(response: Any, request_id: Any, kind: str) -> None:
    assert isinstance(response, dict), response
    assert set(response) == {"jsonrpc", "id", kind}, response
    assert response["jsonrpc"] == "2.0", response
    assert same_id(response["id"], request_id), (request_id, response)


def check_result(response: Any, request_id: Any) -> Any:
    """
    C{response} is a success response to C{request_id}; return its result.
    """
    check_envelope(response, request_id, "result")
    return response["result"]


def check_error_data(data: Any) -> dict[str, Any]:
    """
    C{data} has the shape docs/protocol.rst gives for -32001 and -32602.
    """
    assert isinstance(data, dict), data
    assert set(data) == {"error", "errname", "reason", "trace", "extra"}, data
    assert isinstance(data["error"], int) and not isinstance(data["error"], bool), data
    assert data["errname"] == ERRNO_NAMES.get(data["error"]), data
    assert isinstance(data["reason"], str), data
    trace = data["trace"]
    if trace is not None:
        assert set(trace) == {"class", "formatted", "repr"}, trace
        assert all(isinstance(trace[key], str) and trace[key] for key in trace), trace
    assert data["extra"] is None or isinstance(data["extra"], list), data
    return data


def check_error(response: Any, request_id: Any, code: int) -> dict[str, Any]:
    """
    C{response} is an error response to C{request_id} with C{code}; return its C{error}.
    """
    check_envelope(response, request_id, "error")
    error = response["error"]
    assert {"code", "message"} <= set(error) <= {"code", "message", "data"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    if code in ERROR_MESSAGES:
        assert error["message"] == ERROR_MESSAGES[code], error
    if code in (METHOD_CALL_ERROR, INVALID_PARAMS):
        # docs/protocol.rst gives the shape of data for these two codes only.
        check_error_data(error.get("data"))
    return error


def check_validation_errors(error: dict[str, Any]) -> list[list[Any]]:
    """
    C{error} is -32602 with C{extra} a list of C{[attribute, errmsg, errno]}; return them.
    """
    data = error["data"]
    assert data["error"] == errno.EINVAL and data["errname"] == "EINVAL", data
    extra = data["extra"]
    assert isinstance(extra, list) and extra, data
    for item in extra:
        assert isinstance(item, list) and len(item) == 3, item
        attribute, errmsg, code = item
        assert isinstance(attribute, str) and attribute, item
        assert isinstance(errmsg, str) and errmsg, item
        assert isinstance(code, int) and code in ERRNO_NAMES, item
    return extra


def check_job_record(record: Any) -> None:
    """
    C{record} has every field of a docs/protocol.rst job record, with the types it gives.
    """
    assert isinstance(record, dict) and set(record) == JOB_FIELDS, record
    assert isinstance(record["id"], int) and record["id"] >= 1
    assert isinstance(record["message_ids"], list)
    assert isinstance(record["method"], str)
    assert isinstance(record["arguments"], list)
    assert isinstance(record["transient"], bool) and isinstance(record["abortable"], bool)
    assert record["description"] is None or isinstance(record["description"], str)
    progress = record["progress"]
    assert set(progress) == {"percent", "description", "extra"}, progress
    assert isinstance(progress["percent"], int) and 0 <= progress["percent"] <= 100
    assert isinstance(progress["description"], str)
    assert record["error"] is None or isinstance(record["error"], str)
    assert record["exception"] is None or isinstance(record["exception"], str)
    exc_info = record["exc_info"]
    assert exc_info is None or set(exc_info) == {"repr", "type", "errno", "extra"}, exc_info
    assert record["state"] in JOB_STATES
    started = record["time_started"]
    assert set(started) == {"$date"} and isinstance(started["$date"], int), started
    finished = record["time_finished"]
    if record["state"] in ("WAITING", "RUNNING"):
        assert finished is None
    else:
        assert set(finished) == {"$date"} and finished["$date"] >= started["$date"], finished
    credentials = record["credentials"]
    assert credentials is None or (set(credentials) == {"type", "data"} and isinstance(credentials["data"], dict))


def check_event(message: Any) -> dict[str, Any]:
    """
    C{message} is a C{collection_update} notification about a job; return its params.
    """
    assert set(message) == {"jsonrpc", "method", "params"}, message
    assert message["jsonrpc"] == "2.0" and message["method"] == "collection_update"
    params = message["params"]
    assert set(params) == {"msg", "collection", "id", "fields"}, params
    assert params["msg"] in ("added", "changed", "removed")
    assert params["collection"] == "core.get_jobs"
    check_job_record(params["fields"])
    assert params["fields"]["id"] == params["id"]
    return params


async def assert_alive(daemon: Any, *conns: RawProtocol) -> None:
    """
    Each of C{conns} still answers, and so does a fresh connection.
    """
    for conn in conns:
        assert await conn.call("core.ping") == "pong"
        assert not conn.not_strict_json
    fresh = await connect_raw(daemon.ws_url)
    try:
        assert await fresh.call("core.ping") == "pong"
    finally:
        await fresh.close()


def padded(message: dict[str, Any], size: int) -> bytes:
    """
    C{message} as JSON, padded with blanks to exactly C{size} bytes.
    """
    text = json.dumps(message).encode()
    assert len(text) <= size
    return text + b" " * (size - len(text))


# Fixtures.


@pytest.fixture
def settings(settings):
    """
    The daemon's settings, with the gate services of rpc_services.py.
    """
    return attrs.evolve(settings, plugins=(*settings.plugins, "rpc_services"))


@pytest.fixture(autouse=True)
def gates():
    rpc_services.reset_gates()
    yield
    rpc_services.reset_gates()


@pytest_twisted.async_yield_fixture
async def anon(daemon):
    """
    A raw connection over TCP that has not logged in.
    """
    conn = await connect_raw(daemon.ws_url)
    yield conn
    await conn.close()


@pytest_twisted.async_yield_fixture
async def raw(daemon, admin_client):
    """
    A raw connection over TCP logged in as the administrator.
    """
    conn = await login(await connect_raw(daemon.ws_url))
    yield conn
    await conn.close()


async def job_ids(daemon: Any, method: str) -> list[int]:
    """
    The ids of the jobs of C{method}, as the middleware has them.
    """
    return [job.id for job in daemon.middleware.jobs if job.method == method]


# Notifications.


@pytest_twisted.ensureDeferred
async def test_notification_is_executed_never_answered(daemon, raw):
    """
    A request without an id runs (its job appears and ends) but gets no answer,
    even when it fails; a later request is still answered.
    """
    await raw.call("core.subscribe", "core.get_jobs")
    raw.notify("core.job_test", [{"description": "from a notification"}])
    ended = await raw.wait_for(
        lambda m: is_event(m)
        and m["params"]["fields"]["description"] == "from a notification"
        and m["params"]["fields"]["state"] == "SUCCESS"
    )
    assert check_event(ended)["fields"]["message_ids"] == []
    raw.notify("sample.fail", ["failing notification"])
    raw.notify("sample.crash")
    raw.notify("sample.unserialisable", [])
    raw.notify("sample.add", [1])
    raw.notify("no.such.method", [])
    raw.notify("core.set_options", [{"private_methods": True}])
    await assert_alive(daemon, raw)
    # The set_options notification ran: private methods are visible now.
    assert await raw.call("sample.secret") == "hidden"
    answered = [m for m in raw.messages if is_response(m)]
    assert all(any(same_id(m["id"], sent) for sent in raw.sent_ids) for m in answered), answered
    assert not any(m["id"] is None for m in answered), answered


# Values on the wire.


@pytest.mark.parametrize(
    "when, milliseconds",
    [
        (datetime.datetime(2024, 5, 6, 7, 8, 9, 123999, tzinfo=datetime.timezone.utc), 1714979289123),
        (datetime.datetime(2286, 11, 20, 17, 46, 39, 999999, tzinfo=datetime.timezone.utc), 9999999999999),
        (datetime.datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=datetime.timezone.utc), -1),
        (datetime.datetime(2024, 5, 6, 7, 8, 9, 123999), 1714979289123),  # naive: taken as UTC
    ],
)
def test_a_datetime_is_its_millisecond(when: datetime.datetime, milliseconds: int) -> None:
    """
    A datetime travels as the millisecond it falls in (before 1970 too,
    where truncating would move it a millisecond later), and comes back as
    that millisecond.
    """
    assert wire_json.to_wire(when) == {"$date": milliseconds}
    assert wire_json.loads(wire_json.dumps(when)) == when.replace(
        microsecond=when.microsecond // 1000 * 1000, tzinfo=datetime.timezone.utc
    )


# Authentication.


@pytest_twisted.ensureDeferred
async def test_wrong_password(daemon, admin_client, anon):
    """
    A wrong password: auth.login_ex answers AUTH_ERR, auth.login false, and the
    connection stays anonymous until a right one.
    """
    # Eight failures here: more than the throttle lets by (tests/test_access.py).
    daemon.middleware.logins.throttle.limit = 100
    for username, password in [(ADMIN[0], "wrong"), ("nobody", ADMIN[1]), (ADMIN[0], ""), ("", "")]:
        request = {"mechanism": "PASSWORD_PLAIN", "username": username, "password": password}
        result = await anon.call("auth.login_ex", request)
        assert result == {"response_type": "AUTH_ERR"}
        assert await anon.call("auth.login", username, password) is False
    error = check_error(await anon.request("core.get_jobs", []), anon.sent_ids[-1], METHOD_CALL_ERROR)
    assert error["data"]["error"] == ENOTAUTHENTICATED
    request = {"mechanism": "PASSWORD_PLAIN", "username": ADMIN[0], "password": ADMIN[1]}
    result = await anon.call("auth.login_ex", request)
    assert result["response_type"] == "SUCCESS"
    assert ADMIN[1] not in json.dumps(result)
    assert isinstance(await anon.call("core.get_jobs"), list)
    await assert_alive(daemon, anon)


@pytest_twisted.ensureDeferred
async def test_unix_socket_peer_is_trusted(daemon):
    """
    Over the UNIX socket, a root peer calls without logging in, with the limits of a logged-in connection.
    """
    conn = await connect_raw(daemon.unix_url)
    try:
        assert isinstance(await conn.call("core.get_jobs"), list)
        assert await conn.call("sample.add", 2, 3) == 5
        job_id = await conn.call("core.job_test", {})
        assert isinstance(job_id, int)
        await daemon.middleware.jobs.get(job_id).wait(timeout=TIMEOUT)
        [record] = await conn.call("core.get_jobs", [["id", "=", job_id]])
        assert record["state"] == "SUCCESS"
        big = padded({"jsonrpc": "2.0", "id": "big", "method": "core.ping"}, ANONYMOUS_LIMIT + 1)
        response = await conn.send_and_receive(big)
        assert check_result(response, "big") == "pong"
    finally:
        await conn.close()
    await assert_alive(daemon)


# Large answers.


@pytest_twisted.ensureDeferred
async def test_large_responses_are_sent(daemon, admin_client, anon):
    """
    The size limits are on what clients send, not on answers.
    """
    # Both methods answer at once, so their answers come before that of the
    # core.ping sent after them: no need to wait for what may never come.
    # Before login: a small request whose validation errors make a long answer.
    options = {f"o{i:04}": True for i in range(ANONYMOUS_LIMIT // 16)}
    assert len(json.dumps(options)) < ANONYMOUS_LIMIT
    anon.send_json({"jsonrpc": "2.0", "id": "long-errors", "method": "core.set_options", "params": [options]})
    assert await anon.call("core.ping") == "pong"
    [response] = anon.responses("long-errors")
    assert len(check_validation_errors(check_error(response, "long-errors", INVALID_PARAMS))) == len(options)
    await login(anon)
    anon.send_json({"jsonrpc": "2.0", "id": "long-result", "method": "rpc.big", "params": [AUTHENTICATED_LIMIT * 2]})
    assert await anon.call("core.ping") == "pong"
    [response] = anon.responses("long-result")
    assert check_result(response, "long-result") == "x" * (AUTHENTICATED_LIMIT * 2)


@pytest_twisted.ensureDeferred
async def test_large_job_event(daemon, raw):
    """
    A job whose record is large still runs, and its subscribers get its events.
    """
    subscriber = await login(await connect_raw(daemon.ws_url))
    try:
        await subscriber.call("core.subscribe", "core.get_jobs")
        name = "\u00e9" * 12000  # 24 KB as UTF-8, 72 KB as escaped JSON
        job_id = await raw.call("sample.described", name)
        event = await subscriber.wait_for(lambda m: is_event(m, job_id) and m["params"]["fields"]["state"] == "SUCCESS")
        assert check_event(event)["fields"]["result"] == f"hello {name}"
    finally:
        await subscriber.close()


# Concurrency.


@pytest_twisted.ensureDeferred
async def test_too_many_concurrent_new_style_jobs(daemon, raw):
    """
    New-style job calls stay in flight until their jobs end and count toward the limit.
    """
    await raw.call("core.set_options", {"legacy_jobs": False})
    held = [raw.response(f"job-{i}") for i in range(20)]
    for i in range(20):
        raw.send_json({"jsonrpc": "2.0", "id": f"job-{i}", "method": "rpc.gated", "params": ["jobs"]})
    check_error(await raw.request("rpc.gated", ["jobs"], id="job-20"), "job-20", TOO_MANY_CALLS)
    assert len(await job_ids(daemon, "rpc.gated")) == 20
    assert rpc_services.open_gate("jobs") == 20
    for i, d in enumerate(held):
        assert check_result(await d, f"job-{i}") == "jobs"
    await assert_alive(daemon, raw)


# Jobs.


@pytest_twisted.ensureDeferred
async def test_legacy_job_returns_id(daemon, raw):
    """
    By default a job method answers with its job id at once; the job lists the request id.
    """
    response = await raw.request("rpc.gated", ["legacy"], id="legacy-1")
    job_id = check_result(response, "legacy-1")
    assert isinstance(job_id, int) and not isinstance(job_id, bool) and job_id >= 1
    [record] = await raw.call("core.get_jobs", [["id", "=", job_id]])
    check_job_record(record)
    assert (record["method"], record["state"], record["message_ids"]) == ("rpc.gated", "RUNNING", ["legacy-1"])
    assert record["arguments"] == ["legacy"]
    rpc_services.open_gate("legacy")
    await daemon.middleware.jobs.get(job_id).wait(timeout=TIMEOUT)
    [record] = await raw.call("core.get_jobs", [["id", "=", job_id]])
    check_job_record(record)
    assert (record["state"], record["result"]) == ("SUCCESS", "legacy")


@pytest_twisted.ensureDeferred
async def test_new_style_job(daemon, raw):
    """
    With legacy_jobs false a job method answers with the job's result when it
    ends; the client finds the job id in the event whose message_ids hold the request id.
    """
    assert (await raw.call("core.set_options", {"legacy_jobs": False}))["legacy_jobs"] is False
    await raw.call("core.subscribe", "core.get_jobs")
    answer = raw.response("new-style-1")
    raw.send_json({"jsonrpc": "2.0", "id": "new-style-1", "method": "rpc.gated", "params": ["new"]})
    added = await raw.wait_for(lambda m: is_event(m) and "new-style-1" in m["params"]["fields"]["message_ids"])
    params = check_event(added)
    assert params["msg"] == "added"
    job_id = params["id"]
    assert not answer.called
    rpc_services.open_gate("new")
    response = await answer
    assert check_result(response, "new-style-1") == "new"
    # The events about the job came before the answer, the last one with its end.
    index = raw.messages.index(response)
    events = [check_event(m) for m in raw.messages[:index] if is_event(m, job_id)]
    assert events[0]["msg"] == "added" and events[-1]["fields"]["state"] == "SUCCESS"
    [record] = await raw.call("core.get_jobs", [["id", "=", job_id]])
    assert (record["state"], record["result"], record["message_ids"]) == ("SUCCESS", "new", ["new-style-1"])


@pytest_twisted.ensureDeferred
async def test_new_style_job_errors(daemon, raw):
    """
    A new-style job that fails answers -32001 with its error; a validation failure -32602.
    """
    await raw.call("core.set_options", {"legacy_jobs": False})
    response = await raw.request("core.job_test", [{"error": "planned failure"}])
    error = check_error(response, raw.sent_ids[-1], METHOD_CALL_ERROR)
    assert error["data"]["reason"] == "planned failure"
    assert error["data"]["trace"]["class"] == "CallError"
    error = check_error(await raw.request("sample.failing_job", ["bad"]), raw.sent_ids[-1], METHOD_CALL_ERROR)
    data = error["data"]
    assert (data["error"], data["errname"], data["reason"]) == (errno.EINVAL, "EINVAL", "bad")
    error = check_error(await raw.request("sample.invalid_job", []), raw.sent_ids[-1], INVALID_PARAMS)
    assert check_validation_errors(error) == [["invalid_job.x", "Bad x", errno.EINVAL]]
    error = check_error(await raw.request("core.job_test", [{"sleep": -1}]), raw.sent_ids[-1], INVALID_PARAMS)
    assert [item[0] for item in check_validation_errors(error)] == ["data.sleep"]
    await assert_alive(daemon, raw)


# Events.


async def run_job(conn: RawProtocol, daemon: Any, *params: Any) -> int:
    """
    Run core.job_test to its end with a legacy call; return its id.
    """
    job_id = await conn.call("core.job_test", *params)
    await daemon.middleware.jobs.get(job_id).wait(timeout=TIMEOUT)
    return job_id


@pytest.mark.parametrize("name", ["core.get_jobs", "*"])
@pytest_twisted.ensureDeferred
async def test_subscribe_delivers_job_events(daemon, raw, name):
    """
    core.subscribe returns a UUID and delivers collection_update notifications
    carrying the full job record, from "added" to its end.
    """
    subscription = await raw.call("core.subscribe", name)
    assert isinstance(subscription, str) and str(uuid.UUID(subscription)) == subscription.lower()
    job_id = await raw.call("core.job_test", {"description": "watched"})
    last = await raw.wait_for(lambda m: is_event(m, job_id) and m["params"]["fields"]["state"] == "SUCCESS")
    events = [check_event(m) for m in raw.messages if is_event(m, job_id)]
    assert events[0]["msg"] == "added" and events[0]["fields"]["state"] == "WAITING"
    assert all(e["msg"] == "changed" for e in events[1:])
    states = [e["fields"]["state"] for e in events]
    assert states == sorted(states, key=JOB_STATES.index)
    assert "RUNNING" in states
    final = check_event(last)["fields"]
    assert final["method"] == "core.job_test" and final["arguments"] == [{"description": "watched"}]
    assert final["description"] == "watched" and final["result"] is True
    assert final["progress"]["percent"] == 100
    assert final["error"] is None and final["exception"] is None and final["exc_info"] is None
    assert final["credentials"]["type"] == "LOGIN_PASSWORD"
    assert ADMIN[1] not in json.dumps(events)
    assert final["message_ids"] == [raw.sent_ids[-1]]


@pytest_twisted.ensureDeferred
async def test_failed_job_events(daemon, raw):
    """
    A failed job's record carries its error, traceback and exc_info (VALIDATION for validation errors).
    """
    await raw.call("core.subscribe", "core.get_jobs")
    failed = await raw.call("core.job_test", {"error": "it broke"})
    invalid = await raw.call("sample.invalid_job")
    ends = {}
    for job_id in (failed, invalid):
        event = await raw.wait_for(lambda m: is_event(m, job_id) and m["params"]["fields"]["state"] == "FAILED")
        ends[job_id] = check_event(event)["fields"]
    assert "it broke" in ends[failed]["error"] and "it broke" in ends[failed]["exception"]
    assert ends[failed]["exc_info"]["type"] == "CallError" and ends[failed]["exc_info"]["errno"] == errno.EFAULT
    assert ends[invalid]["exc_info"]["type"] == "VALIDATION"
    assert ends[invalid]["exc_info"]["extra"] == [["invalid_job.x", "Bad x", errno.EINVAL]]


@pytest_twisted.ensureDeferred
async def test_transient_job_sends_no_events(daemon, raw):
    """
    A transient job sends no event and is not listed.
    """
    await raw.call("core.subscribe", "core.get_jobs")
    job_id = await raw.call("sample.transient_job")
    if any(job.id == job_id for job in daemon.middleware.jobs):
        pytest.fail(f"transient job {job_id} is listed")
    # A transient job is forgotten when it ends; wait for it if it has not yet.
    try:
        job = daemon.middleware.jobs.get(job_id)
    except CallError:
        pass
    else:
        assert await job.wait(timeout=TIMEOUT) == "quiet"
    assert await raw.call("core.ping") == "pong"
    assert await raw.call("core.get_jobs", [["id", "=", job_id]]) == []
    assert not any(is_event(m, job_id) for m in raw.messages)


@pytest_twisted.ensureDeferred
async def test_unsubscribe_stops_events(daemon, raw):
    """
    After core.unsubscribe no more events arrive; unsubscribing twice is an error.
    """
    subscription = await raw.call("core.subscribe", "core.get_jobs")
    seen = await run_job(raw, daemon, {})
    assert any(is_event(m, seen) for m in raw.messages)
    assert await raw.call("core.unsubscribe", subscription) is None
    unseen = await run_job(raw, daemon, {})
    assert await raw.call("core.ping") == "pong"
    assert not any(is_event(m, unseen) for m in raw.messages)
    check_error(await raw.request("core.unsubscribe", [subscription]), raw.sent_ids[-1], METHOD_CALL_ERROR)
    check_error(await raw.request("core.unsubscribe", ["not-a-subscription"]), raw.sent_ids[-1], METHOD_CALL_ERROR)
    await assert_alive(daemon, raw)


@pytest_twisted.ensureDeferred
async def test_cannot_unsubscribe_another_connection(daemon, raw):
    """
    A subscription id of another connection is unknown to this one.
    """
    other = await login(await connect_raw(daemon.ws_url))
    try:
        subscription = await other.call("core.subscribe", "core.get_jobs")
        check_error(await raw.request("core.unsubscribe", [subscription]), raw.sent_ids[-1], METHOD_CALL_ERROR)
        job_id = await run_job(raw, daemon, {})
        await other.wait_for(lambda m: is_event(m, job_id) and m["params"]["fields"]["state"] == "SUCCESS")
    finally:
        await other.close()


@pytest_twisted.ensureDeferred
async def test_subscribe_unknown_event(daemon, raw):
    """
    Subscribing to an event nobody offers is an error.
    """
    for name in ["no.such.event", "", "core.get_job", "core"]:
        error = check_error(await raw.request("core.subscribe", [name]), raw.sent_ids[-1], METHOD_CALL_ERROR)
        assert error["data"]["errname"] == "ENOENT", error
    await assert_alive(daemon, raw)


@pytest_twisted.ensureDeferred
async def test_closed_connection_subscriptions_end_jobs_go_on(daemon, raw, monkeypatch):
    """
    When a connection closes, its subscriptions end but its jobs keep running,
    even a new-style call still waiting for its job.
    """
    events = daemon.middleware.events
    gone: Deferred[Any] = Deferred()
    unsubscribe_all = events.unsubscribe_all

    def record_close(subscriber: Any) -> None:
        unsubscribe_all(subscriber)
        if not gone.called:
            gone.callback(subscriber)

    monkeypatch.setattr(events, "unsubscribe_all", record_close)

    leaving = await login(await connect_raw(daemon.ws_url))
    await leaving.call("core.set_options", {"legacy_jobs": False})
    await leaving.call("core.subscribe", "core.get_jobs")
    await leaving.call("core.subscribe", "*")
    assert events.has_subscribers("core.get_jobs")
    leaving.send_json({"jsonrpc": "2.0", "id": "left-behind", "method": "rpc.gated", "params": ["after-close"]})
    added = await leaving.wait_for(lambda m: is_event(m) and "left-behind" in m["params"]["fields"]["message_ids"])
    job = daemon.middleware.jobs.get(added["params"]["id"])
    await leaving.close()
    await gone.addTimeout(TIMEOUT, reactor)
    assert not events.has_subscribers("core.get_jobs")
    assert job.state.value == "RUNNING"
    rpc_services.open_gate("after-close")
    await job.wait(timeout=TIMEOUT)
    assert (job.state.value, job.result) == ("SUCCESS", "after-close")
    await assert_alive(daemon, raw)
