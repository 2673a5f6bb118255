"""
The JSON-RPC protocol of the WebSocket endpoint (docs/protocol.rst), in memory:
what is a request at all, the error answers of calls, the limits on message
sizes and on calls in flight, and how the parser takes bad input.

The endpoint is the daemon's own (L{RpcServerFactory} over a L{Middleware}
with the built-in services and those of C{sample_services.py} and
C{rpc_services.py}), its transport a C{StringTransport} and its clock a
L{MemoryReactorClock}; L{MemoryClient} writes masked frames into it and
reads back what it writes, so every answer is there as soon as a call
returns.  Jobs, logins, events and subscriptions over real sockets are in
C{test_rpc.py}.
"""

from __future__ import annotations

import errno
import json
import struct
from pathlib import Path
from typing import Any, Iterator

import attrs
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from midjobs.auth.avatar import User
from midjobs.auth.roles import FULL_ADMIN
from midjobs.config import Settings
from midjobs.daemon import load_service_classes
from midjobs.middleware import Middleware
from midjobs.plugins import BUILTIN_SERVICES
from midjobs.rpc import RpcServerFactory

import rpc_services
from test_rpc import (
    ANONYMOUS_LIMIT,
    AUTHENTICATED_LIMIT,
    DEFAULT_OPTIONS,
    ENOTAUTHENTICATED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_CALL_ERROR,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    TOO_MANY_CALLS,
    check_error,
    check_result,
    check_validation_errors,
    is_response,
    padded,
    same_id,
    strict_loads,
)

PEER = IPv4Address("TCP", "192.0.2.7", 40000)
UPGRADE = (
    b"GET /api/current HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
TEXT, CLOSE = 0x1, 0x8
#: The administrator, as a password login makes it.
ADMIN = User("admin", {FULL_ADMIN}, "LOGIN_PASSWORD", user_id=1)


def client_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """
    One final frame as a client sends it: masked (with a zero mask, so the
    payload reads as is), its length in the form its size calls for.
    """
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 2**16:
        length = bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        length = bytes([0x80 | 127]) + struct.pack("!Q", size)
    return bytes([0x80 | opcode]) + length + b"\0\0\0\0" + payload


def server_frame(data: bytes) -> tuple[int, bytes, int] | None:
    """
    The first frame in C{data} from the server (unmasked): its opcode,
    payload and length in bytes; L{None} while it is incomplete.
    """
    if len(data) < 2:
        return None
    opcode, size, start = data[0] & 0x0F, data[1] & 0x7F, 2
    if size == 126:
        if len(data) < 4:
            return None
        (size,) = struct.unpack("!H", data[2:4])
        start = 4
    elif size == 127:
        if len(data) < 10:
            return None
        (size,) = struct.unpack("!Q", data[2:10])
        start = 10
    if len(data) < start + size:
        return None
    return opcode, data[start : start + size], start + size


class MemoryClient:
    """
    A WebSocket client of the endpoint in memory that sends exactly the text
    frames a test gives it and collects every message (as C{test_rpc}'s
    C{RawProtocol} does over a socket).

    @ivar messages: every message received, parsed.
    @ivar not_strict_json: the payloads that were not strict JSON (C{NaN}...).
    @ivar close: the code and reason of the server's close frame, once sent;
        the client answers it, as a client does.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.transport = StringTransport(peerAddress=PEER)
        self.protocol = endpoint.factory.buildProtocol(PEER)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(UPGRADE)
        head, _, rest = self.transport.value().partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        self._read = len(head) + 4
        self.messages: list[Any] = []
        self.not_strict_json: list[bytes] = []
        self.sent_ids: list[Any] = []
        self.close: tuple[int, str] | None = None
        self._next_id = 0

    @property
    def closed(self) -> bool:
        """
        Whether the server closed the connection (after its close frame).
        """
        return self.close is not None and bool(self.transport.disconnecting)

    def login(self, user: User = ADMIN) -> MemoryClient:
        self.protocol.session.login(user)
        return self

    # Sending.

    def send_text(self, text: str | bytes) -> None:
        """
        Send one text frame as is (bytes go unchecked, even invalid UTF-8),
        and read what the server answers, in as many turns of its reactor as
        it takes.
        """
        payload = text.encode("utf-8") if isinstance(text, str) else text
        self.protocol.dataReceived(client_frame(payload))
        self.endpoint.clock.advance(0)
        self.receive()

    def send_json(self, message: Any) -> None:
        if isinstance(message, dict) and "id" in message:
            self.sent_ids.append(message["id"])
        self.send_text(json.dumps(message, ensure_ascii=False))

    def new_id(self) -> str:
        self._next_id += 1
        return f"r{self._next_id}"

    def notify(self, method: str, params: list[Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send_json(message)

    # Receiving.

    def receive(self) -> None:
        """
        Read what the server wrote since the last read (answers to calls
        that ended later than they were sent).
        """
        while (frame := server_frame(self.transport.value()[self._read :])) is not None:
            opcode, payload, size = frame
            self._read += size
            if opcode == CLOSE:
                (code,) = struct.unpack("!H", payload[:2])
                self.close = code, payload[2:].decode()
                self.protocol.dataReceived(client_frame(payload[:2], CLOSE))
            elif opcode == TEXT:
                try:
                    message = strict_loads(payload)
                except ValueError:
                    self.not_strict_json.append(payload)
                    message = json.loads(payload)
                self.messages.append(message)

    def responses(self, request_id: Any) -> list[Any]:
        """
        Every response received so far to C{request_id}.
        """
        return [m for m in self.messages if is_response(m) and same_id(m["id"], request_id)]

    def send_and_receive(self, text: str | bytes) -> Any:
        """
        Send one frame and return the one response it got.
        """
        before = len(self.messages)
        self.send_text(text)
        [response] = [m for m in self.messages[before:] if is_response(m)]
        return response

    def request(self, method: Any, params: Any = None, *, id: Any = None) -> Any:
        """
        Send a request (a fresh id unless given) and return its one response.
        """
        request_id = self.new_id() if id is None else id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        before = len(self.messages)
        self.send_json(message)
        [response] = [m for m in self.messages[before:] if is_response(m) and same_id(m["id"], request_id)]
        return response

    def call(self, method: str, *params: Any) -> Any:
        """
        Send a request and return its result; fail the test on an error.
        """
        response = self.request(method, list(params))
        assert "error" not in response, response
        return check_result(response, response["id"])


@attrs.define
class Endpoint:
    """
    The JSON-RPC endpoint of a daemon in memory, and the clients connected to it.
    """

    clock: MemoryReactorClock
    middleware: Middleware
    factory: RpcServerFactory
    clients: list[MemoryClient] = attrs.Factory(list)

    def connect(self) -> MemoryClient:
        client = MemoryClient(self)
        self.clients.append(client)
        return client

    def job_ids(self, method: str) -> list[int]:
        """
        The ids of the jobs of C{method}, as the middleware has them.
        """
        return [job.id for job in self.middleware.jobs if job.method == method]

    def assert_alive(self, *clients: MemoryClient) -> None:
        """
        Each of C{clients} still answers, and so does a fresh connection.
        """
        for client in clients:
            assert client.call("core.ping") == "pong"
            assert not client.not_strict_json
        assert self.connect().call("core.ping") == "pong"


    def close(self) -> None:
        """
        Tell every client's protocol that its connection is gone.
        """
        for client in self.clients:
            client.protocol.connectionLost(Failure(ConnectionDone()))


def open_endpoint(state_dir: Path, settings: Settings) -> Endpoint:
    """
    The endpoint of a daemon with C{settings}, in memory; L{Endpoint.close} it after use.
    """
    clock = MemoryReactorClock()
    middleware = Middleware(clock, state_dir, settings=settings)
    middleware.add_services(BUILTIN_SERVICES)
    middleware.add_services(load_service_classes(("sample_services", "rpc_services")))
    factory = RpcServerFactory(middleware)
    # Autobahn's own timers (pings, handshakes) run on the global reactor: none in memory.
    factory.setProtocolOptions(autoPingInterval=0, closeHandshakeTimeout=0, openHandshakeTimeout=0)
    return Endpoint(clock, middleware, factory)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    made = open_endpoint(tmp_path, Settings())
    yield made
    made.close()


@pytest.fixture(autouse=True)
def gates() -> Iterator[None]:
    rpc_services.reset_gates()
    yield
    rpc_services.reset_gates()


@pytest.fixture
def anon(endpoint: Endpoint) -> MemoryClient:
    """
    A connection that has not logged in.
    """
    return endpoint.connect()


@pytest.fixture
def raw(endpoint: Endpoint) -> MemoryClient:
    """
    A connection logged in as the administrator.
    """
    return endpoint.connect().login()


# Framing: what is a request at all.


#: Objects that are no valid JSON-RPC 2.0 request, and what is wrong with them.
INVALID_REQUESTS = [
    ("jsonrpc missing", {"method": "core.ping"}),
    ("jsonrpc 1.0", {"jsonrpc": "1.0", "method": "core.ping"}),
    ("jsonrpc a number", {"jsonrpc": 2.0, "method": "core.ping"}),
    ("jsonrpc 2", {"jsonrpc": "2", "method": "core.ping"}),
    ("jsonrpc null", {"jsonrpc": None, "method": "core.ping"}),
    ("method missing", {"jsonrpc": "2.0"}),
    ("method empty", {"jsonrpc": "2.0", "method": ""}),
    ("method a number", {"jsonrpc": "2.0", "method": 5}),
    ("method null", {"jsonrpc": "2.0", "method": None}),
    ("method an array", {"jsonrpc": "2.0", "method": ["core.ping"]}),
    ("method an object", {"jsonrpc": "2.0", "method": {"name": "core.ping"}}),
    ("method a boolean", {"jsonrpc": "2.0", "method": True}),
    ("params an object", {"jsonrpc": "2.0", "method": "core.job_test", "params": {"sleep": 0}}),
    ("params a string", {"jsonrpc": "2.0", "method": "core.job_test", "params": "x"}),
    ("params a number", {"jsonrpc": "2.0", "method": "core.job_test", "params": 5}),
    ("params null", {"jsonrpc": "2.0", "method": "core.job_test", "params": None}),
    ("params a boolean", {"jsonrpc": "2.0", "method": "core.job_test", "params": True}),
]


def test_parse_error(endpoint: Endpoint, anon: MemoryClient) -> None:
    """
    A message that is not JSON gets -32700 with a null id, and the connection goes on.
    """
    for text in [
        "",
        " ",
        "{",
        "not json",
        "{'single': 'quotes'}",
        '{"jsonrpc": "2.0", "id": 1, "method": "core.ping"',
        '{"jsonrpc": "2.0", "id": 1, "method": "core.ping"} trailing',
        '{"jsonrpc": "2.0", "id": 1}{"jsonrpc": "2.0", "id": 2}',
        "[1, 2,]",
        "\u00e9\u4e2d\U0001f600",
        "\x00",
    ]:
        error = check_error(anon.send_and_receive(text), None, PARSE_ERROR)
        assert "data" not in error or error["data"] is None or isinstance(error["data"], dict)
        assert anon.call("core.ping") == "pong", text
    endpoint.assert_alive(anon)


def test_batch_is_invalid_request(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    A JSON array (a batch) gets one -32600 with a null id; none of its requests runs.
    """
    before = endpoint.job_ids("core.job_test")
    for batch in [
        [],
        [{"jsonrpc": "2.0", "id": "batched", "method": "core.ping"}],
        [
            {"jsonrpc": "2.0", "id": "batched", "method": "core.job_test", "params": [{}]},
            {"jsonrpc": "2.0", "method": "core.job_test", "params": [{}]},
        ],
        [1, 2, 3],
    ]:
        check_error(raw.send_and_receive(json.dumps(batch)), None, INVALID_REQUEST)
    endpoint.assert_alive(raw)
    assert raw.responses("batched") == []
    assert endpoint.job_ids("core.job_test") == before


def test_non_object_is_invalid_request(endpoint: Endpoint, anon: MemoryClient) -> None:
    """
    JSON that is neither an object nor an array gets -32600 with a null id.
    """
    for text in ["1", "-2.5", '"core.ping"', "null", "true", "false"]:
        check_error(anon.send_and_receive(text), None, INVALID_REQUEST)
        assert anon.call("core.ping") == "pong", text
    endpoint.assert_alive(anon)


def test_invalid_request(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    An object that is no valid JSON-RPC 2.0 request gets -32600 (with its id
    when it has a valid one, else null), is not executed, and the connection goes on.
    """
    before = endpoint.job_ids("core.job_test")
    for what, message in INVALID_REQUESTS:
        for request_id in ["bad-request", 7, None]:
            response = raw.send_and_receive(json.dumps({**message, "id": request_id}))
            try:
                check_error(response, request_id, INVALID_REQUEST)
            except AssertionError as e:
                raise AssertionError(f"{what}, id {request_id!r}: {e}") from None
        # Without an id it is still no notification: it is answered, with a null id.
        response = raw.send_and_receive(json.dumps(message))
        try:
            check_error(response, None, INVALID_REQUEST)
        except AssertionError as e:
            raise AssertionError(f"{what}, no id: {e}") from None
        assert raw.call("core.ping") == "pong", what
    endpoint.assert_alive(raw)
    assert endpoint.job_ids("core.job_test") == before


def test_bad_id_type(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    An id that is not a string, an integer or null gets -32600 with a null id; nothing runs.
    """
    before = endpoint.job_ids("core.job_test")
    for bad_id in [1.5, 1.0, -0.5, 1e300, True, False, [], [1], {}, {"id": 1}]:
        message = {"jsonrpc": "2.0", "id": bad_id, "method": "core.job_test", "params": [{}]}
        check_error(raw.send_and_receive(json.dumps(message)), None, INVALID_REQUEST)
        assert raw.call("core.ping") == "pong", bad_id
    endpoint.assert_alive(raw)
    assert endpoint.job_ids("core.job_test") == before


def test_valid_ids_are_echoed(endpoint: Endpoint, anon: MemoryClient) -> None:
    """
    A string, an integer or null id comes back as it was sent; params may be left out.
    """
    for request_id in ["abc", "", "\u00e9 \U0001f600", 0, -1, 1, 2**31, 2**63, 10**30]:
        response = anon.request("core.ping", [], id=request_id)
        assert check_result(response, request_id) == "pong"
        response = anon.send_and_receive(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "core.ping"}))
        assert check_result(response, request_id) == "pong"
    # null is an id too: the request is answered, with a null id.
    null_id = {"jsonrpc": "2.0", "id": None, "method": "core.ping", "params": []}
    response = anon.send_and_receive(json.dumps(null_id))
    assert check_result(response, None) == "pong"
    endpoint.assert_alive(anon)


def test_notification_before_login_is_not_answered(endpoint: Endpoint, anon: MemoryClient) -> None:
    """
    A notification that may not run (no login) gets no error either.
    """
    anon.notify("core.get_jobs", [])
    anon.notify("core.job_test", [{}])
    endpoint.assert_alive(anon)
    assert [m for m in anon.messages if is_response(m) and m["id"] is None] == []
    assert endpoint.job_ids("core.job_test") == []


# Message sizes.


def test_message_size_under_the_limits(endpoint: Endpoint, anon: MemoryClient) -> None:
    """
    Messages up to 8 KiB before login and up to 64 KiB after it are served.
    """
    for size in [ANONYMOUS_LIMIT - 1, ANONYMOUS_LIMIT]:
        response = anon.send_and_receive(padded({"jsonrpc": "2.0", "id": size, "method": "core.ping"}, size))
        assert check_result(response, size) == "pong"
    anon.login()
    for size in [ANONYMOUS_LIMIT + 1, AUTHENTICATED_LIMIT // 2, AUTHENTICATED_LIMIT]:
        response = anon.send_and_receive(padded({"jsonrpc": "2.0", "id": size, "method": "core.ping"}, size))
        assert check_result(response, size) == "pong"
    endpoint.assert_alive(anon)


@pytest.mark.parametrize("logged_in, size", [(False, ANONYMOUS_LIMIT + 1), (True, AUTHENTICATED_LIMIT + 1)])
def test_oversized_message_closes_connection(endpoint: Endpoint, logged_in: bool, size: int) -> None:
    """
    A message over the limit (8 KiB before login, 64 KiB after) ends that
    connection, and only that one.
    """
    bystander = endpoint.connect()
    conn = endpoint.connect()
    if logged_in:
        conn.login()
    conn.send_text(padded({"jsonrpc": "2.0", "id": "too-big", "method": "core.ping"}, size))
    assert conn.closed
    assert conn.responses("too-big") == []
    endpoint.assert_alive(bystander)


@pytest.mark.parametrize("logged_in, size", [(False, ANONYMOUS_LIMIT + 1), (True, AUTHENTICATED_LIMIT + 1)])
def test_oversized_message_close_code(endpoint: Endpoint, logged_in: bool, size: int) -> None:
    """
    The connection is closed with 1009 (message too big) and a reason.
    """
    conn = endpoint.connect()
    if logged_in:
        conn.login()
    conn.send_text(padded({"jsonrpc": "2.0", "id": "too-big", "method": "core.ping"}, size))
    assert conn.close is not None
    code, reason = conn.close
    assert code == 1009
    assert reason


def test_invalid_utf8_closes_only_that_connection(endpoint: Endpoint, anon: MemoryClient) -> None:
    """
    A text frame that is not UTF-8 is a WebSocket protocol error: that connection ends, others go on.
    """
    bystander = endpoint.connect()
    anon.send_text(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}')
    assert anon.closed
    assert anon.responses(1) == []
    endpoint.assert_alive(bystander)


# Robustness of the parser.


def test_deeply_nested_json(endpoint: Endpoint, anon: MemoryClient) -> None:
    """
    Deeply nested JSON within the size limit gets an error answer, and the connection goes on.
    """
    depth = 3000
    response = anon.send_and_receive("[" * depth + "]" * depth)
    assert check_error(response, None, response["error"]["code"])["code"] in (PARSE_ERROR, INVALID_REQUEST)
    endpoint.assert_alive(anon)


def test_date_out_of_range(endpoint: Endpoint, anon: MemoryClient) -> None:
    """
    A $date out of range is bad input: it gets an error answer, and the connection goes on.
    """
    for value in [1e20, -1e20, 10**20]:
        message = {"jsonrpc": "2.0", "id": "date", "method": "core.set_options", "params": [{"$date": value}]}
        response = anon.send_and_receive(json.dumps(message))
        code = response["error"]["code"]
        assert code in (PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS)
        check_error(response, None if code == PARSE_ERROR else "date", code)
    endpoint.assert_alive(anon)


def test_nan_is_not_json(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    NaN and Infinity are not JSON: -32700; nothing non-JSON is ever sent back.
    """
    for constant in ["NaN", "Infinity", "-Infinity"]:
        text = '{"jsonrpc": "2.0", "id": "nan", "method": "sample.echo", "params": [%s]}' % constant
        response = raw.send_and_receive(text)
        check_error(response, None, PARSE_ERROR)
    assert raw.not_strict_json == []
    endpoint.assert_alive(raw)


# Methods and their errors.


def test_unknown_method(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    A method that does not exist gets -32601 "Method does not exist".
    """
    for name in [
        "nope", "core.nope", "core.", ".ping", "core.ping.x", "core", "CORE.PING", " core.ping",
        "core._job_test_lock", "core.setup", "core.stop", "core.exposed_methods", "core.__init__",
        "sample.__class__", "rpc._wait",
    ]:
        check_error(raw.request(name, []), raw.sent_ids[-1], METHOD_NOT_FOUND)
    endpoint.assert_alive(raw)


def test_private_method(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    A private method does not exist for a connection until it sets private_methods.
    """
    check_error(raw.request("sample.secret", []), raw.sent_ids[-1], METHOD_NOT_FOUND)
    options = raw.call("core.set_options", {"private_methods": True})
    assert options == {"legacy_jobs": True, "private_methods": True, "py_exceptions": False}
    assert raw.call("sample.secret") == "hidden"
    # Only for that connection.
    other = endpoint.connect().login()
    check_error(other.request("sample.secret", []), other.sent_ids[-1], METHOD_NOT_FOUND)
    raw.call("core.set_options", {"private_methods": False})
    check_error(raw.request("sample.secret", []), raw.sent_ids[-1], METHOD_NOT_FOUND)
    endpoint.assert_alive(raw)


def test_invalid_params(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    The wrong number or types of arguments get -32602 "Invalid params" with
    errno 22 EINVAL and a list of [attribute, errmsg, errno], and nothing runs.
    """
    cases = [
        ("sample.add", [], 1),
        ("sample.add", [1], 1),
        ("sample.add", [1, 2, 3], 1),
        ("sample.add", [1, "2"], 1),
        ("sample.add", ["1", 2.5], 2),
        ("sample.add", [True, 1], 1),
        ("sample.add", [None, [1]], 2),
        ("sample.echo", [1, 2], 1),
        ("core.ping", [1], 1),
        ("core.set_options", [], 1),
        ("core.set_options", ["legacy_jobs"], 1),
        ("core.set_options", [{"no_such_option": True}], 1),
        ("core.set_options", [{"legacy_jobs": 1, "private_methods": "yes"}], 2),
        ("core.get_jobs", ["not a list"], 1),
        ("core.job_test", ["not a dict"], 1),
        ("core.job_test", [{}, {}], 1),
        ("core.subscribe", [5], 1),
    ]
    before = endpoint.job_ids("core.job_test")
    for method, params, count in cases:
        response = raw.request(method, params)
        error = check_error(response, raw.sent_ids[-1], INVALID_PARAMS)
        extra = check_validation_errors(error)
        assert len(extra) == count, (method, params, extra)
        assert all(item[2] == errno.EINVAL for item in extra), extra
        assert raw.call("core.ping") == "pong"
    assert raw.call("core.set_options", {}) == DEFAULT_OPTIONS
    assert endpoint.job_ids("core.job_test") == before
    endpoint.assert_alive(raw)


def test_call_error(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    A method raising CallError gets -32001 "Method call error" with its errno,
    errname, reason, trace and extra.
    """
    error = check_error(raw.request("sample.fail", ["boom"]), raw.sent_ids[-1], METHOD_CALL_ERROR)
    data = error["data"]
    assert data["error"] == errno.EFAULT and data["errname"] == "EFAULT"
    assert data["reason"] == "boom"
    assert data["extra"] is None
    assert data["trace"]["class"] == "CallError"
    assert data["trace"]["repr"] == "CallError('boom', 14, None)"
    assert "Traceback" in data["trace"]["formatted"] and "boom" in data["trace"]["formatted"]
    endpoint.assert_alive(raw)


def test_unexpected_exception(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    Any other exception also gets -32001, with its class and traceback.
    """
    error = check_error(raw.request("sample.crash", []), raw.sent_ids[-1], METHOD_CALL_ERROR)
    data = error["data"]
    assert data["reason"] == "unexpected"
    assert data["trace"]["class"] == "RuntimeError"
    assert data["trace"]["repr"] == "RuntimeError('unexpected')"
    assert "RuntimeError: unexpected" in data["trace"]["formatted"]
    endpoint.assert_alive(raw)


def test_validation_errors_raised_inside(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    ValidationErrors raised by the method itself get -32602 too.
    """
    error = check_error(raw.request("sample.invalid", []), raw.sent_ids[-1], INVALID_PARAMS)
    assert check_validation_errors(error) == [["sample.field", "Bad value", errno.EINVAL]]
    endpoint.assert_alive(raw)


def test_unserialisable_result(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    A result with no JSON form gets -32603 "Internal error".
    """
    check_error(raw.request("sample.unserialisable", []), raw.sent_ids[-1], INTERNAL_ERROR)
    endpoint.assert_alive(raw)


def test_extended_values(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    Datetimes, dates, times and sets travel in their extended forms, both ways.
    """
    values = {
        "datetime": {"$date": 1714979289123},
        "date": {"$type": "date", "$value": "2024-05-06"},
        "time": {"$time": "07:08:09"},
        "set": {"$set": [3]},
    }
    assert raw.call("rpc.values") == values
    assert raw.call("sample.echo", values) == values
    assert raw.call("sample.echo", [values]) == [values]


# Before login.


def test_not_authenticated(endpoint: Endpoint, anon: MemoryClient) -> None:
    """
    Before login only core.ping, core.set_options and auth's login methods
    answer; everything else gets -32001 errno 207 ENOTAUTHENTICATED "Not
    authenticated", whatever its arguments, and runs nothing.
    """
    for method, params in [
        ("core.get_jobs", []),
        ("core.get_methods", []),
        ("core.subscribe", ["core.get_jobs"]),
        ("core.unsubscribe", ["x"]),
        ("core.job_test", [{}]),
        ("core.job_abort", [1]),
        ("sample.echo", [1]),
        ("sample.add", [1]),
        ("sample.add", ["wrong", "types", "and count"]),
        ("sample.fail", ["x"]),
        ("user.query", []),
        ("rpc.hold", ["never"]),
    ]:
        error = check_error(anon.request(method, params), anon.sent_ids[-1], METHOD_CALL_ERROR)
        data = error["data"]
        assert data["error"] == ENOTAUTHENTICATED, (method, data)
        assert (data["errname"], data["reason"]) == ("ENOTAUTHENTICATED", "Not authenticated"), (method, data)
    assert endpoint.job_ids("core.job_test") == []
    assert rpc_services.waiting("never") == 0
    assert anon.call("core.ping") == "pong"
    assert anon.call("core.set_options", {}) == DEFAULT_OPTIONS
    assert anon.call("auth.logout") is True
    endpoint.assert_alive(anon)


# Concurrency.


def test_too_many_concurrent_calls(endpoint: Endpoint, raw: MemoryClient) -> None:
    """
    With 20 calls in flight on a connection, the next gets -32000 at once;
    other connections are not limited; once calls end, the connection serves again.
    """
    for i in range(20):
        raw.send_json({"jsonrpc": "2.0", "id": f"hold-{i}", "method": "rpc.hold", "params": ["gate"]})
    response = raw.request("core.ping", [], id="one-too-many")
    check_error(response, "one-too-many", TOO_MANY_CALLS)
    response = raw.request("rpc.hold", ["gate"], id="two-too-many")
    check_error(response, "two-too-many", TOO_MANY_CALLS)
    # A notification over the limit is dropped silently; bad messages are still answered.
    raw.notify("rpc.hold", ["gate"])
    check_error(raw.send_and_receive("{"), None, PARSE_ERROR)
    assert rpc_services.waiting("gate") == 20
    endpoint.assert_alive()
    other = endpoint.connect().login()
    assert other.call("sample.add", 1, 2) == 3
    assert not any(raw.responses(f"hold-{i}") for i in range(20))
    assert rpc_services.open_gate("gate") == 20
    raw.receive()
    for i in range(20):
        [response] = raw.responses(f"hold-{i}")
        assert check_result(response, f"hold-{i}") == "gate"
    endpoint.assert_alive(raw)


# Options.


def test_set_options(endpoint: Endpoint, anon: MemoryClient) -> None:
    """
    core.set_options works before login and returns the three options in force, per connection.
    """
    defaults = DEFAULT_OPTIONS
    assert anon.call("core.set_options", {}) == defaults
    assert anon.call("core.set_options", {"legacy_jobs": False}) == {**defaults, "legacy_jobs": False}
    everything = {"legacy_jobs": False, "private_methods": True, "py_exceptions": True}
    assert anon.call("core.set_options", {"private_methods": True, "py_exceptions": True}) == everything
    assert anon.call("core.set_options", {}) == everything
    other = endpoint.connect()
    assert other.call("core.set_options", {}) == defaults
    assert anon.call("core.set_options", defaults) == defaults
