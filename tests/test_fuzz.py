"""
Fuzzing the WebSocket JSON-RPC endpoint of a live daemon with hypothesis.

How hypothesis meets pytest-twisted: pytest-twisted (1.14) runs a test
decorated with C{@given} over C{@pytest_twisted.ensureDeferred} one example
at a time, each as a coroutine in the reactor's greenlet, waiting for it to
end.  So hypothesis draws as usual (no C{.example()}), and each example is
a batch of frames that the test sends on one connection of the live daemon,
then checks the answers.  The daemon and that connection are function-scoped
fixtures shared by every example of a test (hence the suppressed
C{function_scoped_fixture} health check).  Settings are deterministic:
C{derandomize=True}, C{database=None}, no deadline; no shrinking, because
the daemon's state carries over from one example to the next (a failure
names the frames of its batch instead).

The oracle, L{expectation}, reads each frame's text as docs/protocol.rst says the
daemon must: not JSON gets -32700 with a null id; JSON that is no valid
request gets -32600 (with the request's id when it has a valid one, else
null); a notification gets nothing; a request gets exactly one answer with
its id: a result, or an error whose code is one of docs/protocol.rst's (-32601 for
a method that does not exist).  Every batch ends with a core.ping whose
answer must come too; after every batch a fresh connection must get "pong"
and a job must run to SUCCESS.  L{test_parser_agrees_with_oracle} checks the
oracle against the daemon's own parser, in process, on many more frames.

What the generator leaves out, and why:
  - invalid UTF-8 and oversized frames: they end the connection by design
    (tests/test_protocol_jsonrpc.py covers them);
  - NaN and Infinity inside requests, nesting deeper than Python's recursion
    limit, out-of-range C{$date} values, and answers over 64 KiB (so
    core.get_jobs always gets a small C{limit}): each has a test of its own
    (tests/test_protocol_jsonrpc.py, and tests/test_rpc.py for the answers);
  - C{sample.thread_wait_abort} (it blocks until aborted), and numbers that
    would make a job sleep, loop or allocate without bound: such arguments
    come from small ranges only; core.job_wait never draws its own job's id;
  - C{user.create/update/delete}: password hashing would slow every batch
    down, and they could lock the test's own account out;
  - C{core.download} and C{core.job_download_logs}: their jobs wait for an
    HTTP download that never comes (the HTTP tests cover them).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import attrs
import pytest
import pytest_twisted
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from midjobs.rpc._jsonrpc import RpcError, parse_request
from test_rpc import (
    ERROR_CODES,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    TOO_MANY_CALLS,
    RawProtocol,
    _reject_constant,
    check_error,
    check_event,
    check_result,
    connect_raw,
    is_response,
    login,
)
from conftest import ADMIN

#: Batches per connection; each holds up to MAX_BATCH messages.
EXAMPLES = 300
MAX_BATCH = 12
#: Jobs run before the fuzzing, so that core.job_wait draws the id of one of
#: them (or of none), never its own: a job waiting for itself never ends.
EARLY_JOBS = 5
#: The longest one batch may take to be answered.
BATCH_TIMEOUT = 10

#: The daemon's state carries over from one example to the next, so a failing
#: batch may not fail again alone: shrinking would be slow and misleading.  The
#: failure message names the frames of the batch instead.
FUZZ_SETTINGS = settings(
    phases=[Phase.explicit, Phase.generate],
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=EXAMPLES,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        # The daemon and the connection are meant to be shared by every example.
        HealthCheck.function_scoped_fixture,
    ],
)


# The oracle.


@attrs.frozen
class Expectation:
    """
    What the daemon must do with one message.

    @ivar answered: it gets exactly one answer (else none).
    @ivar id: the id of that answer.
    @ivar codes: the error codes it may carry.
    @ivar result_allowed: it may be a success.
    """

    answered: bool
    id: Any = None
    codes: frozenset[int] = frozenset()
    result_allowed: bool = False


NO_ANSWER = Expectation(answered=False)


def _valid_id(value: Any) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def expectation(text: str, known_methods: frozenset[str]) -> Expectation:
    """
    What docs/protocol.rst says the daemon does with the text frame C{text}.
    """
    try:
        message = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        try:
            json.loads(text)
        except ValueError:
            return Expectation(True, None, frozenset({PARSE_ERROR}))
        # A bare NaN or Infinity: not JSON, though Python reads it (see
        # test_rpc.py::test_nan_is_not_json); either answer will do.
        return Expectation(True, None, frozenset({PARSE_ERROR, INVALID_REQUEST}))
    if not isinstance(message, dict):
        return Expectation(True, None, frozenset({INVALID_REQUEST}))
    if "id" in message and not _valid_id(message["id"]):
        return Expectation(True, None, frozenset({INVALID_REQUEST}))
    request_id = message.get("id")
    method = message.get("method")
    if (
        message.get("jsonrpc") != "2.0"
        or not isinstance(method, str)
        or not method
        or not isinstance(message.get("params", []), list)
    ):
        return Expectation(True, request_id, frozenset({INVALID_REQUEST}))
    if "id" not in message:
        return NO_ANSWER
    if method not in known_methods:
        return Expectation(True, request_id, frozenset({METHOD_NOT_FOUND, TOO_MANY_CALLS}))
    return Expectation(True, request_id, ERROR_CODES - {PARSE_ERROR, INVALID_REQUEST}, result_allowed=True)


def id_key(value: Any) -> tuple[str, Any]:
    """
    A request id as a dictionary key in which C{1} and C{"1"} differ.
    """
    return (type(value).__name__, value)


# The generator.

SAFE_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
KEYS = SAFE_TEXT.filter(lambda key: key != "sleep")
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | SAFE_TEXT
)
EXTENDED = (
    st.integers(-6 * 10**13, 2 * 10**14).map(lambda ms: {"$date": ms})
    | st.dates().map(lambda d: {"$type": "date", "$value": d.isoformat()})
    | st.times().map(lambda t: {"$time": t.strftime("%H:%M:%S")})
    | st.lists(st.integers(-5, 5) | SAFE_TEXT, max_size=3).map(lambda items: {"$set": items})
)
VALUES = st.recursive(
    SCALARS | EXTENDED,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=6,
)
#: Values with no number anywhere: safe for methods whose numbers are durations or counts.
NON_NUMERIC = st.recursive(
    st.none() | st.booleans() | SAFE_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=4,
)
SMALL_DURATION = st.sampled_from([0, 0.0, 0.001, 0.01])
SMALL_COUNT = st.integers(0, 3)

FILTERS = st.lists(
    st.tuples(
        st.sampled_from(["id", "state", "method", "progress.percent", "message_ids", "nope", ""]),
        st.sampled_from(["=", "!=", ">", "<=", "in", "nin", "rin", "^", "$", "C=", "~", "bogus"]),
        SCALARS | st.lists(SCALARS, max_size=2),
    ).map(list)
    | st.lists(VALUES, max_size=3),
    max_size=3,
)
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "select": st.lists(st.sampled_from(["id", "state", "progress.percent", "nope"]) | SAFE_TEXT, max_size=3),
        "order_by": st.lists(st.sampled_from(["id", "-id", "nulls_first:state", "method"]) | SAFE_TEXT, max_size=2),
        "offset": st.integers(-2, 5),
        "limit": st.integers(-2, 5),
        "count": st.booleans(),
        "get": st.booleans(),
        "extra": st.dictionaries(st.just("raw_result"), st.booleans()),
    },
) | VALUES
#: core.get_jobs options that keep the answer to a few jobs (see ONLY_FITTING).
LIMITED_OPTIONS = st.builds(
    lambda options, limit: {**options, "limit": limit},
    OPTIONS.filter(lambda o: isinstance(o, dict)),
    st.integers(1, 5),
)
JOB_TEST_DATA = st.fixed_dictionaries(
    {},
    optional={
        "sleep": SMALL_DURATION | st.sampled_from([-1, "x", True, None]),
        "lock": st.sampled_from(["fuzz-a", "fuzz-b", None, 5]),
        "description": SAFE_TEXT,
        "error": SAFE_TEXT,
        "other": VALUES,
    },
)
CREDENTIALS = st.sampled_from(["", ADMIN[0], "nobody"]), st.sampled_from(["", "wrong", ADMIN[1]])


def _params(*items: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.tuples(*items).map(list)


#: Arguments that fit each method (or nearly).  Methods marked bounded get only
#: these and non-numeric junk; the others also get any list of values.
FITTING: dict[str, st.SearchStrategy[list[Any]]] = {
    "core.ping": st.just([]),
    "core.get_jobs": _params(FILTERS, LIMITED_OPTIONS),
    "core.set_options": _params(
        st.fixed_dictionaries(
            {},
            optional={
                "legacy_jobs": st.booleans(),
                "private_methods": st.booleans(),
                "py_exceptions": st.booleans(),
                "bogus": st.booleans(),
            },
        )
    ),
    "core.subscribe": _params(st.sampled_from(["core.get_jobs", "*", "core.get_jobs:x", "nope", ""]) | SAFE_TEXT),
    "core.unsubscribe": _params(SAFE_TEXT | st.uuids().map(str)),
    "core.get_methods": st.just([]),
    "core.job_abort": _params(st.integers(-1, EARLY_JOBS)),
    "core.job_wait": _params(st.integers(-1, EARLY_JOBS)),
    "core.job_test": _params(JOB_TEST_DATA) | st.just([]),
    "core.bulk": _params(
        st.sampled_from(["sample.add", "sample.echo", "sample.fail", "core.job_test", "no.such"]),
        st.lists(st.lists(st.integers(-3, 3) | SAFE_TEXT, max_size=2), max_size=3),
    ),
    "auth.login": _params(*CREDENTIALS),
    "auth.login_ex": _params(
        st.fixed_dictionaries(
            {
                "mechanism": st.sampled_from(["PASSWORD_PLAIN", "OTHER"]),
                "username": CREDENTIALS[0],
                "password": CREDENTIALS[1],
            }
        )
    ),
    "auth.logout": st.just([]),
    "auth.me": st.just([]),
    "user.query": _params(FILTERS) | st.just([]),
    "sample.echo": _params(VALUES) | st.just([]),
    "sample.add": _params(st.integers(-(2**70), 2**70), st.integers(-(2**70), 2**70)),
    "sample.blocking_add": _params(st.integers(-100, 100), st.integers(-100, 100)),
    "sample.secret": st.just([]),
    "sample.fail": _params(SAFE_TEXT),
    "sample.invalid": st.just([]),
    "sample.crash": st.just([]),
    "sample.unserialisable": st.just([]),
    "sample.thread_job": _params(SMALL_COUNT) | st.just([0]),
    "sample.thread_nested": _params(SMALL_DURATION),
    "sample.thread_nested_fail": st.just([]),
    "sample.async_nested": _params(SMALL_DURATION),
    "sample.failing_job": _params(SAFE_TEXT),
    "sample.invalid_job": st.just([]),
    "sample.nested_invalid": st.just([]),
    "sample.logging_job": _params(SMALL_COUNT),
    "sample.exclusive": _params(SMALL_DURATION),
    "sample.transient_job": st.just([]),
    "sample.described": _params(SAFE_TEXT),
    "sample.sleepy_thread": _params(SMALL_DURATION),
}
#: Methods whose numbers (or dictionaries) are durations, counts or nested calls.
BOUNDED = frozenset(
    {
        "core.job_test", "core.bulk", "core.job_wait", "sample.thread_job", "sample.thread_nested",
        "sample.async_nested", "sample.logging_job", "sample.exclusive", "sample.sleepy_thread",
    }
)
#: Methods that get only the arguments above: every job of the run listed at
#: once would make an answer over 64 KiB, which the daemon never sends (a known
#: bug, test_rpc.py::test_large_responses_are_sent).
ONLY_FITTING = frozenset({"core.get_jobs"})
#: Names that are no method, or not one a client may call.
BOGUS_METHODS = [
    "nope", "core.nope", "core.", "core", ".ping", "core.ping.x", "CORE.PING", "core.setup", "core.stop",
    "core._job_test_lock", "sample.thread_wait_abort.x", "auth", "a.b.c", "\u00e9.\u00e9",
]
#: Method names to draw from, uniformly: each real method four times (those
#: that hash a password or log out once), then a few bogus names and None for
#: "any text" (hypothesis's one_of would give each branch a third).
_RARE = ["auth.login", "auth.login_ex", "auth.logout"]
_REAL = [name for name in FITTING if name not in _RARE] * 4 + _RARE
_POOL = _REAL + BOGUS_METHODS[: len(_REAL) // 12] + [None] * (len(_REAL) // 12)
METHODS = st.sampled_from(_POOL).flatmap(lambda name: SAFE_TEXT if name is None else st.just(name))


@st.composite
def request_parts(draw: st.DrawFn) -> dict[str, Any]:
    """
    A well-formed request, without its id.
    """
    method = draw(METHODS)
    fitting = FITTING.get(method)
    if fitting is None:
        params = draw(st.lists(VALUES, max_size=3))
    elif method in ONLY_FITTING:
        params = draw(fitting)
    elif method in BOUNDED:
        params = draw(fitting | st.lists(NON_NUMERIC, max_size=3))
    else:
        params = draw(fitting | st.lists(VALUES, max_size=3))
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params or not draw(st.booleans()):
        message["params"] = params
    return message


VALID_IDS = st.integers(-(2**63), 2**63) | SAFE_TEXT | st.none()
BAD_IDS = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(KEYS, st.integers(), max_size=2)
)


NOT_A_METHOD = st.just("") | st.integers() | st.none() | st.lists(SAFE_TEXT, max_size=2) | st.booleans()
NOT_PARAMS = st.none() | st.booleans() | st.integers() | SAFE_TEXT | st.dictionaries(KEYS, VALUES, max_size=3)


def _without(message: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != key}


@st.composite
def malformed(draw: st.DrawFn) -> Any:
    """
    Something JSON that is no valid request: one thing wrong with a request, or no object at all.
    """
    message = {**draw(request_parts()), "id": draw(VALID_IDS)}
    if draw(st.booleans()):
        message = _without(message, "id")
    change = draw(st.sampled_from(["jsonrpc", "method", "params", "id", "batch", "scalar"]))
    if change == "jsonrpc":
        return (
            _without(message, "jsonrpc")
            if draw(st.booleans())
            else {**message, "jsonrpc": draw(st.sampled_from(["1.0", "2", 2.0, 2, None, "2.0 "]) | SAFE_TEXT)}
        )
    if change == "method":
        return (
            _without(message, "method")
            if draw(st.booleans())
            else {**message, "method": draw(NOT_A_METHOD)}
        )
    if change == "params":
        return {**message, "params": draw(NOT_PARAMS)}
    if change == "id":
        return {**message, "id": draw(BAD_IDS)}
    if change == "batch":
        return draw(st.lists(st.just(message) | VALUES, max_size=3))
    return draw(SCALARS)


NOT_JSON = (
    SAFE_TEXT
    | st.sampled_from(["{", "}", "[", "{'a': 1}", '{"jsonrpc": "2.0",}', "undefined", "nan", "\x00", "{}{}"])
)


@st.composite
def frame(draw: st.DrawFn) -> str:
    """
    The text of one frame: a request, a notification, malformed JSON-RPC, or not JSON at all.
    """
    kind = draw(st.sampled_from(["request"] * 5 + ["notification"] * 2 + ["malformed"] * 2 + ["broken", "text"]))
    if kind == "request":
        return json.dumps({**draw(request_parts()), "id": draw(VALID_IDS)}, ensure_ascii=draw(st.booleans()))
    if kind == "notification":
        return json.dumps(draw(request_parts()))
    if kind == "malformed":
        return json.dumps(draw(malformed()))
    if kind == "broken":
        # A request cut short, or with garbage after it.
        text = json.dumps({**draw(request_parts()), "id": draw(VALID_IDS)})
        if draw(st.booleans()):
            return text[: draw(st.integers(0, max(0, len(text) - 1)))]
        return text + draw(st.sampled_from([",", "}", "x", " {}", "]"]))
    return draw(NOT_JSON)


BATCHES = st.lists(frame(), min_size=1, max_size=MAX_BATCH)


# Sending a batch and checking the answers.


@attrs.define
class Fuzzer:
    """
    One connection of the live daemon, fed one batch at a time.
    """

    conn: RawProtocol
    known_methods: frozenset[str]
    #: Log in again after a batch that may have logged out.
    stay_logged_in: bool = False
    sentinel: int = 2**80
    sent: int = 0
    jobs_checked: int = 0

    async def exchange(self, batch: list[str]) -> None:
        expected: dict[tuple[str, Any], list[Expectation]] = {}
        frames = []
        for text in batch:
            expect = expectation(text, self.known_methods)
            if expect.answered and expect.id is not None and id_key(expect.id) in expected:
                # Two requests with one id in flight: their answers could not be told apart.
                continue
            if expect.answered:
                expected.setdefault(id_key(expect.id), []).append(expect)
            frames.append(text)
        self.sentinel += 1
        sentinel = self.sentinel
        expected[id_key(sentinel)] = [Expectation(True, sentinel, frozenset({TOO_MANY_CALLS}), result_allowed=True)]
        wanted = Counter({key: len(items) for key, items in expected.items()})
        received: list[Any] = []
        start = len(self.conn.messages)

        def complete(message: Any) -> bool:
            if is_response(message):
                received.append(message)
            got = Counter(id_key(m["id"]) for m in received)
            return all(got[key] >= count for key, count in wanted.items())

        done = self.conn.wait_new(complete, timeout=BATCH_TIMEOUT)
        for text in frames:
            self.conn.send_text(text)
        self.conn.send_json({"jsonrpc": "2.0", "id": sentinel, "method": "core.ping"})
        self.sent += len(frames) + 1
        try:
            await done
        except Exception as e:
            missing = wanted - Counter(id_key(m["id"]) for m in received)
            raise AssertionError(f"no answer for {dict(missing)} after {frames!r}: {e!r}") from None

        got = Counter(id_key(m["id"]) for m in received)
        assert got == wanted, (got, wanted, frames)
        for response in received:
            allowed = expected[id_key(response["id"])]
            if "result" in response:
                assert any(e.result_allowed for e in allowed), (response, frames)
                check_result(response, response["id"])
            else:
                code = response.get("error", {}).get("code")
                assert any(code in e.codes for e in allowed), (response, allowed, frames)
                check_error(response, response["id"], code)
        for message in self.conn.messages[start:]:
            if is_response(message):
                continue
            if message.get("method") == "collection_update":
                check_event(message)
            else:
                assert message.get("method") == "notify_unsubscribed", message
                assert set(message["params"]) == {"collection", "error"}, message
        assert not self.conn.not_strict_json, self.conn.not_strict_json
        assert not self.conn.closed_with.called, self.conn.closed_with
        if self.stay_logged_in and any("auth.logout" in text for text in frames):
            await login(self.conn)


async def still_serving(daemon: Any, fuzzer: Fuzzer) -> None:
    """
    The fuzzed connection is open; a fresh one gets "pong"; a job still runs to SUCCESS.
    """
    assert not fuzzer.conn.closed_with.called
    fresh = await connect_raw(daemon.ws_url)
    try:
        assert await fresh.call("core.ping") == "pong"
    finally:
        await fresh.close()
    # Over the UNIX socket, the trusted peer needs no (slow) password check.
    local = await connect_raw(daemon.unix_url)
    try:
        await local.call("core.set_options", {"legacy_jobs": False})
        fuzzer.jobs_checked += 1
        request_id = f"after-batch-{fuzzer.jobs_checked}"
        response = await local.request("core.job_test", [{"description": "after a batch"}], id=request_id)
        assert check_result(response, request_id) is True
        [record] = await local.call("core.get_jobs", [["message_ids", "rin", request_id]])
        assert record["state"] == "SUCCESS"
    finally:
        await local.close()


async def early_jobs(daemon: Any, conn: RawProtocol) -> None:
    """
    Run EARLY_JOBS jobs to their end: jobs 1 to EARLY_JOBS.
    """
    for _ in range(EARLY_JOBS):
        job_id = await conn.call("core.job_test", {})
        await daemon.middleware.jobs.get(job_id).wait(timeout=BATCH_TIMEOUT)
    assert job_id == EARLY_JOBS


@pytest.fixture(name="settings")
def never_throttled(settings):
    """
    The daemon's settings with a login throttle that never trips: the
    fuzzed logins fail often (with wrong passwords for the administrator
    too), and the throttle would then refuse the fuzzer's own logging in
    again after a fuzzed C{auth.logout}.  How many do depends on the
    examples drawn, so it would fail one run and not another.  The
    throttle has its own tests (test_bad_credentials, test_throttle_sources).
    """
    return attrs.evolve(settings, login_attempts=10**9)


@pytest_twisted.async_yield_fixture
async def admin_fuzzer(daemon, admin_client):
    """
    One connection logged in as the administrator, shared by every example
    (logged in again whenever a batch may have logged it out).
    """
    conn = await login(await connect_raw(daemon.ws_url))
    await early_jobs(daemon, conn)
    fuzzer = Fuzzer(conn, frozenset(daemon.middleware.methods), stay_logged_in=True)
    yield fuzzer
    await conn.close()


@pytest_twisted.async_yield_fixture
async def anonymous_fuzzer(daemon, admin_client):
    """
    One connection that has not logged in (until a fuzzed auth.login does), shared by every example.
    """
    local = await connect_raw(daemon.unix_url)
    await early_jobs(daemon, local)
    await local.close()
    conn = await connect_raw(daemon.ws_url)
    fuzzer = Fuzzer(conn, frozenset(daemon.middleware.methods))
    yield fuzzer
    await conn.close()


@FUZZ_SETTINGS
@given(batch=BATCHES)
@pytest_twisted.ensureDeferred
async def test_fuzz_logged_in(daemon, admin_fuzzer, batch):
    """
    Random batches on one logged-in connection: every request is answered
    exactly once as docs/protocol.rst says, notifications never; the daemon still serves.
    """
    await admin_fuzzer.exchange(batch)
    await still_serving(daemon, admin_fuzzer)


@FUZZ_SETTINGS
@given(batch=BATCHES)
@pytest_twisted.ensureDeferred
async def test_fuzz_anonymous(daemon, anonymous_fuzzer, batch):
    """
    The same on a connection that starts without a login.
    """
    await anonymous_fuzzer.exchange(batch)
    await still_serving(daemon, anonymous_fuzzer)


# The oracle against the daemon's own parser, in process.


@settings(derandomize=True, database=None, deadline=None, max_examples=2000)
@given(frame())
def test_parser_agrees_with_oracle(text: str) -> None:
    """
    The daemon's parser makes of each frame what the oracle says: parse
    error, invalid request (with the same id), notification or request.
    """
    expect = expectation(text, frozenset())
    try:
        request = parse_request(text.encode("utf-8"))
    except RpcError as e:
        assert expect.answered and e.code in expect.codes, (text, e.code, expect)
        assert e.code in (PARSE_ERROR, INVALID_REQUEST)
        assert id_key(e.id) == id_key(expect.id), (text, e.id, expect)
        return
    if request.is_notification:
        assert expect == NO_ANSWER, (text, expect)
    else:
        assert expect.answered and METHOD_NOT_FOUND in expect.codes, (text, expect)
        assert PARSE_ERROR not in expect.codes and INVALID_REQUEST not in expect.codes, (text, expect)
        assert id_key(request.id) == id_key(expect.id), (text, request.id, expect)
