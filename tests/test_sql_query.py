"""
The job list's queries answered by the database: L{midjobs.store._sqlquery}
and the stores' C{_query}, against C{filter_list} over the same records.

Each query is answered as C{core.get_jobs} answers it (L{query_jobs}'s
window and merge over jobs in memory, which the store leaves out), on
SQLite and on the private PostgreSQL, for the filters the task manager sends
and for generated ones (hypothesis), and compared with C{filter_list} over
the union.  Deep offsets and counts read only the rows of the answer.
"""

from __future__ import annotations

import datetime
import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import psycopg
import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet import reactor

from midjobs import wire_json
from midjobs.errors import CallError
from midjobs.query import compile_filters, compile_regex, filter_list, validate_options
from midjobs.store import close_database, open_database
from midjobs.store import jobs as jobs_module
from midjobs.store._sqlquery import (
    _CASEFOLD_KIN,
    _RE2_FOLD_KIN,
    POSTGRESQL,
    SQLITE,
    Dialect,
    copied_fields,
    literal_of,
    translate,
)
from midjobs.store.database import apply_part
from midjobs.store.history import _answer, _window, query_jobs
from midjobs.store.jobs import JOBS_SCHEMA, SQLiteJobStore, SqlJobStore, _upsert, row_of
from midjobs.store.pg import PgDatabase, _Cursor
from midjobs.store.pg_jobs import PgJobStore, _upsert as pg_upsert
from midjobs.store.pg_schema import JOBS as PG_JOBS

if TYPE_CHECKING:
    from postgres_server import PostgresServer

pytest_plugins = ["postgres_server"]

_ECONNABORTED = 103
_T0 = 1_764_900_000_000  # ms


def date(ms: int) -> datetime.datetime:
    value: datetime.datetime = wire_json.from_wire({"$date": ms})
    return value


def literal_regex(text: str) -> str:
    """
    What the page sends for a search (listquery.js C{literalRegex}).
    """
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)


def search(text: str) -> list[Any]:
    """
    The page's search filter (listquery.js C{queryFilters}).
    """
    pattern = literal_regex(text)
    fields = ["method", "description", "error", "arguments.0", "arguments.1", "arguments.2", "arguments.3"]
    return ["OR", [*([field, "C~", pattern] for field in fields), ["arguments", "Crin", text]]]


TEXTS = [
    "backup of /tank", "BACKUP", "Kelvin \u212a", "\u017ftra\u00dfe", "STRASSE", "50%_off", 'say "hi"', "back\\slash",
    "\u00fcn\u00efcode", "\u00dcN\u00cfCODE", "\ufb01le", "\u01f0ob", "x", "line\nbreak", "tab\there", "k", "S",
    "\u212a\u212aq",
]
USERS: list[Any] = ["alice", "bob", "Alice", "\u00e9lodie", None, 7, "", {"a": 1}]
NODES: list[Any] = ["alpha", "beta", None, "gamma", 3]
ERRNOS: list[Any] = [None, _ECONNABORTED, 103.0, 2, True, "103", 22, 2**60]
METHODS = ["core.job_test", "filesystem.put", "sample.a", "z.last", "Sample.A"]
STATES = ["SUCCESS", "FAILED", "ABORTED", "SUCCESS", "RUNNING", "WAITING", "FAILED"]


def records(n: int) -> list[dict[str, Any]]:
    """
    C{n} job records with a spread of every field the page filters on, nulls
    and values of other types among them.
    """
    out = []
    for i in range(1, n + 1):
        state = STATES[i % len(STATES)]
        user = USERS[(i * 5) % len(USERS)]
        credentials: Any
        if i % 13 == 0:
            credentials = None
        elif i % 17 == 0:
            credentials = {"type": "LOGIN_PASSWORD", "data": ["not", "a", "dict"]}
        elif i % 19 == 0:
            credentials = {"type": "LOGIN_PASSWORD", "data": {"user_id": i}}
        else:
            credentials = {"type": "LOGIN_PASSWORD", "data": {"username": user, "user_id": i % 4}}
        exc_info = None
        if state in ("FAILED", "ABORTED"):
            exc_info = {"repr": "E()", "type": "E", "errno": ERRNOS[i % len(ERRNOS)], "extra": None}
        started = None if i % 11 == 0 else date(_T0 + ((i * 7919) % 50_000) * 1000)
        finished = None if state in ("RUNNING", "WAITING") else date(_T0 + 60_000_000 + (i * 104729) % 9_000_000)
        record: dict[str, Any] = {
            "id": i, "message_ids": [i], "method": METHODS[(i * 3) % len(METHODS)],
            "arguments": [TEXTS[i % len(TEXTS)], {"n": i}, TEXTS[(i * 7) % len(TEXTS)]] if i % 4 else [],
            "transient": False, "description": None if i % 5 == 0 else TEXTS[(i * 3) % len(TEXTS)],
            "abortable": bool(i % 2), "logs_path": None, "logs_excerpt": None,
            "progress": {"percent": (i * 13) % 101, "description": "", "extra": None},
            "result": None, "result_encoding_error": None,
            "error": TEXTS[(i * 11) % len(TEXTS)] if exc_info else None, "exception": None, "exc_info": exc_info,
            "state": state, "time_started": started, "time_finished": finished, "credentials": credentials,
        }
        if i % 23 != 0:
            record["node"] = NODES[i % len(NODES)]
        out.append(record)
    return out


def roundtrip(value: Any) -> Any:
    return wire_json.loads(wire_json.dumps(value))


def fresher(stored: list[dict[str, Any]], ids: list[int]) -> list[dict[str, Any]]:
    """
    Fresher records of the jobs C{ids} (as memory holds them): another
    state, user and node than stored.
    """
    by_id = {r["id"]: r for r in stored}
    out = []
    for job_id in ids:
        record = dict(by_id[job_id], state="RUNNING", node="beta", time_finished=None, exc_info=None, error=None)
        record["credentials"] = {"type": "LOGIN_PASSWORD", "data": {"username": "alice", "user_id": 1}}
        out.append(record)
    return out


def answer_of(run: Callable[[], Any]) -> Any:
    try:
        return run()
    except CallError as e:
        return ("CallError", e.errno)


# What the page sends: filters, orders and pages.

PAGE_FILTERS: list[list[Any]] = [
    [],
    [["state", "=", "RUNNING"]],
    [["state", "in", ["ABORTED", "FAILED"]], ["OR", [["state", "=", "ABORTED"], ["exc_info.errno", "=", _ECONNABORTED]]]],
    [["state", "=", "FAILED"], ["exc_info.errno", "!=", _ECONNABORTED]],
    [["method", "=", "sample.a"]],
    [["credentials.data.username", "=", "alice"]],
    [["credentials.data.username", "!=", "alice"]],
    [["credentials.data.username", "in", ["bob", "\u00e9lodie"]]],
    [["credentials.data.username", "nin", ["bob", ""]]],
    [["node", "=", "beta"]],
    [["node", "!=", "beta"]],
    [["time_started", ">=", date(_T0 + 10_000_000)]],
    [["time_started", ">=", date(_T0 + 10_000_000)], ["time_started", "<", date(_T0 + 30_000_000)]],
    [["time_finished", "<=", date(_T0 + 64_000_000)], ["time_finished", "!=", date(_T0 + 60_000_000)]],
    [["exc_info.errno", "in", [2, 22]]],
    [["exc_info.errno", "nin", [2, 22]]],
    [["exc_info.errno", "=", 1]],
    [search("backup")],
    [search("BACK")],
    [search("k")],
    [search("s")],
    [search("ss")],
    [search("\u00df")],
    [search("stra\u00dfe")],
    [search("KKQ")],
    [search("stra")],
    [search("STRASSE")],
    [["arguments", "Crin", "FILE"]],
    [["arguments.0", "C~", "kkq"]],
    [["OR", [["description", "C~", "STRA"], ["error", "C~", "STRA"]]]],
    [search("50%")],
    [search("%")],
    [search("_")],
    [search('"hi"')],
    [search("\\")],
    [search("\u00fc")],
    [search("\u00dcn")],
    [search("fi")],
    [search("file")],
    [search("job")],
    [search("x")],
    [search("line\nb")],
    [search("sample.a")],
    [search("z.last"), ["state", "=", "FAILED"]],
    [["credentials.data.username", "=", "alice"], ["node", "=", "alpha"], search("e")],
    # The visibility filter of a user without roles (midjobs.access).
    [["OR", [["credentials.data.user_id", "=", 1], ["method", "in", ["sample.a"]]]], ["state", "=", "SUCCESS"]],
    [["OR", [[["node", "=", "alpha"], ["state", "=", "FAILED"]], ["credentials.data.username", "=", "bob"]]]],
]

PAGE_ORDERS: list[list[str]] = [
    ["-id"], ["id"], ["-time_started", "-id"], ["method", "id"], ["-state", "-id"], ["-description", "-id"],
    ["credentials.data.username", "id"], ["-node", "-id"], ["nulls_first:-time_finished", "-id"],
]


def page_queries() -> Iterator[tuple[list[Any], dict[str, Any]]]:
    for i, filters in enumerate(PAGE_FILTERS):
        yield filters, {"count": True}
        order = PAGE_ORDERS[i % len(PAGE_ORDERS)]
        for offset in (0, 3, 40, 150, 395):
            yield filters, {"order_by": order, "offset": offset, "limit": 20, "select": ["id", "state", "method"]}
        yield filters, {"order_by": ["-id"], "get": True}
        yield filters, {"order_by": order, "offset": 7}


# Synchronous stores: the engines' SQL run through their cursors, in this thread.


def sqlite_cursor(path: str = ":memory:") -> sqlite3.Cursor:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("CREATE TABLE schema_version (name TEXT PRIMARY KEY, version INTEGER NOT NULL, applied REAL NOT NULL)")
    apply_part(db.cursor(), "jobs", JOBS_SCHEMA)
    return db.cursor()


def fill(cursor: Any, stored: list[dict[str, Any]], upsert: Callable[[int], str], extra: tuple[Any, ...] = ()) -> None:
    for start in range(0, len(stored), 100):
        chunk = stored[start : start + 100]
        cursor.execute(upsert(len(chunk)), [v for r in chunk for v in (*row_of(r), *copied_fields(r), *extra)])


class Synchronous:
    """
    C{query_jobs} over a cursor: the store's C{_query} on C{dialect}.
    """

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self.cursor = cursor
        self.dialect = dialect

    def query(self, memory: list[dict[str, Any]], filters: Any, options: dict[str, Any]) -> Any:
        opts = validate_options(options)
        predicate = compile_filters(filters)
        exclude = frozenset(r["id"] for r in memory)
        asked = opts if opts.count else _window(opts, len(memory))
        stored = SqlJobStore._query(self.cursor, filters, asked, exclude, None, self.dialect)
        return _answer(memory, stored, 0 if opts.count else asked.offset, predicate, opts)


@pytest.fixture(scope="module")
def stored() -> list[dict[str, Any]]:
    return records(400)


@pytest.fixture(scope="module")
def sqlite_store(stored: list[dict[str, Any]]) -> Synchronous:
    cursor = sqlite_cursor()
    fill(cursor, stored, _upsert)
    return Synchronous(cursor, SQLITE)


@pytest.fixture(scope="module")
def pg_store(postgres_server: PostgresServer, stored: list[dict[str, Any]]) -> Iterator[Synchronous]:
    name = f"sql_query_{os.getpid()}"
    postgres_server.psql(f"CREATE DATABASE {name} OWNER {postgres_server.user} TEMPLATE template0;")
    try:
        with psycopg.connect(postgres_server.url_for(name), autocommit=True) as conn:
            cursor = _Cursor(psycopg.RawCursor(conn), "test")
            for statement in PG_JOBS:
                cursor.execute(statement)
            fill(cursor, stored, pg_upsert, ("n1",))
            yield Synchronous(cursor, POSTGRESQL)
    finally:
        postgres_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


@pytest.fixture(params=["sqlite", "pg"])
def engine_store(request: pytest.FixtureRequest) -> Synchronous:
    store: Synchronous = request.getfixturevalue(f"{request.param}_store")
    return store


MEMORY_IDS = [5, 6, 77, 150, 151, 300, 399]


def test_the_pages_queries_equal_filter_list(engine_store: Synchronous, stored: list[dict[str, Any]]) -> None:
    """
    Every filter kind the page sends, every order, pages deep and shallow,
    counts and C{get}: the store's answer merged with the jobs in memory is
    C{filter_list}'s over the union.
    """
    memory = roundtrip(fresher(stored, MEMORY_IDS))
    fresh = {r["id"]: r for r in memory}
    union = [fresh.get(r["id"], r) for r in roundtrip(stored)]
    for filters, options in page_queries():
        expected = answer_of(lambda: filter_list(union, filters, options))
        got = answer_of(lambda: engine_store.query(memory, filters, options))
        assert got == expected, (filters, options)


def test_the_pages_filters_are_answered_by_sql() -> None:
    """
    No filter the page sends is left to Python but the search, which SQL narrows.
    """
    options = validate_options({"order_by": ["-id"], "limit": 100})
    for filters in PAGE_FILTERS:
        text = wire_json.dumps(filters)
        if '~"' in text or 'rin"' in text or "user_id" in text:
            continue  # searches, and a field without a column
        for dialect in (SQLITE, POSTGRESQL):
            sql = translate(filters, options, dialect)
            assert sql.exact and sql.ordered, filters
    for text in ("backup", "50%", "stra\u00dfe"):
        sql = translate([search(text)], options)
        assert not sql.exact and "LIKE" in sql.where, text


def test_a_search_is_narrowed_by_one_like() -> None:
    sql = translate([search("Back_up 50%")], validate_options({}))
    assert sql.where == "WHERE (record LIKE ? ESCAPE '\\' OR record LIKE ? ESCAPE '\\')"
    # k and s may be the Kelvin sign and the long s (and more letters for a
    # casefold, which is Crin's): never taken literally.  _ and % are escaped.
    # Crin's element is a whole JSON string: between quotes.
    assert sql.params == ("%bac%\\_up 50\\%%", '%"b%c%\\_up 50\\%"%')
    pg = translate([search("Back_up")], validate_options({}), POSTGRESQL)
    # The record folded once (ASCII letters alone, in the "C" collation) for every pattern.
    assert pg.where == 'WHERE lower(record COLLATE "C") LIKE ANY (ARRAY[?, ?])'
    assert pg.params == ("%bac%\\_up%", '%"b%c%\\_up"%')
    # Nothing left to narrow with: no LIKE at all.
    assert translate([search("\u00df")], validate_options({})).where == ""
    assert translate([search("ks")], validate_options({})).where == ""
    # A member SQL knows nothing of makes the whole OR Python's.
    odd = ["OR", [["description", "C~", "backup"], ["description", "C~", "back.p"]]]
    assert translate([odd], validate_options({})).where == ""


def test_literals_of_patterns() -> None:
    assert literal_of("a\\.b\\*\\[x\\]") == "a.b*[x]"
    assert literal_of("caf\u00e9 au lait") == "caf\u00e9 au lait"
    for pattern in ("a.b", "^a", "a$", "a|b", "a\\d", "\\Qa\\E", "a\\", "(a)", "a{2}", "\\x41"):
        assert literal_of(pattern) is None, pattern


def test_the_case_folding_kin_of_ascii_letters() -> None:
    """
    The ASCII letters a search cannot take literally: those RE2's case
    folding relates to a character beyond ASCII, and those in the casefold
    of one (C{Crin}).  Checked against every code point.
    """
    fold_kin = set()
    casefold_kin = set()
    any_ascii = compile_regex("[\\x20-\\x7e]", ignore_case=True)
    for code in range(0x80, 0x110000):
        if 0xD800 <= code < 0xE000:
            continue
        char = chr(code)
        casefold_kin.update(c for c in char.casefold() if c.isascii())
        if any_ascii(char):
            fold_kin.update(a for a in "abcdefghijklmnopqrstuvwxyz" if compile_regex(a, ignore_case=True)(char))
    assert fold_kin == set(_RE2_FOLD_KIN)
    assert {c.lower() for c in casefold_kin} <= set(_CASEFOLD_KIN)


# Generated queries.

_SEARCH_WORDS = [
    "back", "K", "s", "ss", "\u00df", "50%", "_", '"', "\\", "\u00fc", "fi", "\u01f0", "x", "e", "a.b", "kkq", "STRA",
    "file", "strasse", "JOB",
]

_values = {
    "id": st.integers(-5, 420),
    "method": st.sampled_from(METHODS + ["zzz"]),
    "state": st.sampled_from(STATES + ["NOPE"]),
    "credentials.data.username": st.sampled_from(USERS[:4] + ["\u00e9lodie", "nobody"]),
    "node": st.sampled_from(["alpha", "beta", "gamma", "delta"]),
    "exc_info.errno": st.sampled_from([103, 103.0, 2, 1, 22, 0]),
    "time_started": st.integers(_T0 - 1000, _T0 + 51_000_000).map(date),
    "time_finished": st.integers(_T0 + 59_000_000, _T0 + 70_000_000).map(date),
}
_ORDERED = {"id", "method", "state", "time_started", "time_finished"}


@st.composite
def condition(draw: st.DrawFn) -> list[Any]:
    field = draw(st.sampled_from([*_values, "search", "description"]))
    if field == "search":
        word = draw(st.sampled_from(_SEARCH_WORDS))
        target = draw(st.sampled_from(["method", "description", "error", "arguments.0", "arguments.2", "arguments"]))
        if target == "arguments":
            return ["arguments", draw(st.sampled_from(["Crin", "rin"])), draw(st.sampled_from(TEXTS + _SEARCH_WORDS))]
        return [target, draw(st.sampled_from(["C~", "~"])), literal_regex(word)]
    if field == "description":
        return ["description", "^", draw(st.sampled_from(["b", "B", "x"]))]  # Python's alone
    ops = ["=", "!=", "in", "nin"]
    if field in _ORDERED:
        ops += [">", ">=", "<", "<="]
    op = draw(st.sampled_from(ops))
    if op in ("in", "nin"):
        return [field, op, draw(st.lists(_values[field], max_size=3))]
    return [field, op, draw(_values[field])]


def filter_list_of(depth: int) -> st.SearchStrategy[list[Any]]:
    member: st.SearchStrategy[Any] = condition()
    if depth > 0:
        member = st.one_of(condition(), or_group(depth - 1))
    return st.lists(member, max_size=3)


def or_group(depth: int) -> st.SearchStrategy[list[Any]]:
    members = st.one_of(condition(), filter_list_of(depth).filter(bool))
    return st.lists(members, min_size=1, max_size=3).map(lambda m: ["OR", m])


_orders = st.lists(
    st.sampled_from(["id", "-id", "method", "-state", "time_started", "-time_finished", "nulls_first:time_started",
                     "description", "-node"]),
    max_size=2,
)


@st.composite
def query_options(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["count", "page", "get", "all"]))
    if kind == "count":
        return {"count": True}
    options: dict[str, Any] = {"order_by": draw(_orders), "offset": draw(st.integers(0, 420))}
    if kind == "page":
        options["limit"] = draw(st.integers(1, 40))
    elif kind == "get":
        options["get"] = True
    return options


_PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_PROPERTY
@given(filters=filter_list_of(2), options=query_options(), in_memory=st.lists(st.integers(1, 400), max_size=6))
def test_generated_queries_equal_filter_list_on_sqlite(
    sqlite_store: Synchronous, stored: list[dict[str, Any]], filters: list[Any], options: dict[str, Any],
    in_memory: list[int],
) -> None:
    check(sqlite_store, stored, filters, options, in_memory)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(filters=filter_list_of(1), options=query_options(), in_memory=st.lists(st.integers(1, 400), max_size=4))
def test_generated_queries_equal_filter_list_on_postgresql(
    pg_store: Synchronous, stored: list[dict[str, Any]], filters: list[Any], options: dict[str, Any],
    in_memory: list[int],
) -> None:
    check(pg_store, stored, filters, options, in_memory)


def check(store: Synchronous, stored: list[dict[str, Any]], filters: list[Any], options: dict[str, Any],
          in_memory: list[int]) -> None:
    memory = roundtrip(fresher(stored, sorted(set(in_memory))))
    fresh = {r["id"]: r for r in memory}
    union = [fresh.get(r["id"], r) for r in roundtrip(stored)]
    expected = answer_of(lambda: filter_list(union, filters, options))
    assert answer_of(lambda: store.query(memory, filters, options)) == expected


# Reading only what the answer needs.


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """
    The ids of the rows the store decodes (whatever thread reads them).
    """
    seen: list[int] = []
    lock = threading.Lock()
    decode = jobs_module._decode

    def counting(job_id: int, text: str, logs_dir: Path | None) -> Any:
        with lock:
            seen.append(job_id)
        return decode(job_id, text, logs_dir)

    monkeypatch.setattr(jobs_module, "_decode", counting)
    return seen


def test_deep_pages_and_counts_read_only_the_answer(
    engine_store: Synchronous, stored: list[dict[str, Any]], decoded: list[int]
) -> None:
    memory = roundtrip(fresher(stored, MEMORY_IDS))
    page = engine_store.query(memory, [], {"order_by": ["-id"], "offset": 350, "limit": 10, "select": ["id"]})
    assert page == [{"id": i} for i in range(50, 40, -1)]
    assert len(decoded) <= 10 + len(MEMORY_IDS)
    decoded.clear()
    alice = [["credentials.data.username", "=", "alice"], ["node", "!=", "beta"]]
    assert engine_store.query(memory, alice, {"count": True}) == filter_list(
        [{**r, "id": r["id"]} for r in roundtrip(stored) if r["id"] not in MEMORY_IDS] + memory, alice, {"count": True}
    )
    assert decoded == []
    engine_store.query(memory, [["state", "=", "FAILED"], ["exc_info.errno", "!=", 103]],
                       {"order_by": ["-time_started", "-id"], "offset": 30, "limit": 5})
    assert len(decoded) <= 5 + len(MEMORY_IDS)


# The copied columns of rows there were before them.


def test_sqlite_rows_stored_before_get_their_copied_fields(stored: list[dict[str, Any]], tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    db.execute("CREATE TABLE schema_version (name TEXT PRIMARY KEY, version INTEGER NOT NULL, applied REAL NOT NULL)")
    apply_part(db.cursor(), "jobs", JOBS_SCHEMA[:4])
    rows = [row_of(r) for r in stored] + [(999, "m", "SUCCESS", None, None, None, "not JSON")]
    db.executemany("INSERT INTO jobs (id, method, state, time_started, time_finished, logs_path, record) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    assert apply_part(db.cursor(), "jobs", JOBS_SCHEMA) == len(JOBS_SCHEMA) - 4
    got = {job_id: (u, n, e) for job_id, u, n, e in db.execute("SELECT id, username, job_node, errno FROM jobs")}
    assert got == {**{r["id"]: copied_fields(roundtrip(r)) for r in stored}, 999: (None, None, None)}


def test_postgresql_rows_stored_before_get_their_copied_fields(
    stored: list[dict[str, Any]], postgres_database: str
) -> None:
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        cursor = _Cursor(psycopg.RawCursor(conn), "test")
        cutoff = PG_JOBS.index("CREATE INDEX jobs_lock_queue ON jobs (lock_name, lock_seq) "
                               "WHERE lock_name IS NOT NULL AND state IN ('WAITING', 'RUNNING')") + 1
        for statement in PG_JOBS[:cutoff]:
            cursor.execute(statement)
        odd = [
            (997, "m", "SUCCESS", None, None, None, '{"node": "a\\u0000b", "exc_info": {"errno": 1e400}}', "n1"),
            (998, "m", "SUCCESS", None, None, None, '{"credentials": {"data": {"username": "\\ud800"}}}', "n1"),
            (999, "m", "SUCCESS", None, None, None, "not JSON", "n1"),
        ]
        cursor.executemany(
            "INSERT INTO jobs (id, method, state, time_started, time_finished, logs_path, record, node) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(*row_of(r), "n1") for r in stored] + odd,
        )
        for statement in PG_JOBS[cutoff:]:
            cursor.execute(statement)
        cursor.execute("SELECT id, username, job_node, errno FROM jobs")
        got = {job_id: (u, n, e) for job_id, u, n, e in cursor.fetchall()}
    expected = {r["id"]: copied_fields(roundtrip(r)) for r in stored}
    assert got == {**expected, 997: (None, None, None), 998: (None, None, None), 999: (None, None, None)}


# The stores as the daemon runs them.


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_daemons_stores_answer_the_page(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """
    The stores' own reads (their pools, PostgreSQL's server-side cursor)
    and their writes of the copied fields: C{query_jobs} equals
    C{filter_list} for the page's queries.
    """
    data = records(200)
    store: SqlJobStore
    if kind == "sqlite":
        pool = open_database(str(tmp_path / "jobs.db"))
        store = SQLiteJobStore(pool, reactor, reader=open_database(str(tmp_path / "jobs.db"), reads_only=True))
    else:
        db = PgDatabase(request.getfixturevalue("postgres_database"), reactor, size=3)
        await db.open()
        store = PgJobStore(db, reactor, node="n1")
    try:
        await store.setup(tmp_path)
        for record in data[:-1]:
            store.record_created(record["id"], record)
        await store.record_finished(data[-1])
        memory = roundtrip(fresher(data, [3, 100, 199]))
        fresh = {r["id"]: r for r in memory}
        union = [fresh.get(r["id"], r) for r in roundtrip(data)]
        for filters, options in page_queries():
            try:
                expected: Any = filter_list(union, filters, options)
            except CallError as e:
                expected = ("CallError", e.errno)
            try:
                got: Any = await query_jobs(memory, store, filters, options)
            except CallError as e:
                got = ("CallError", e.errno)
            assert got == expected, (filters, options)
    finally:
        await store.stop()
        if kind == "sqlite":
            await close_database(pool)
        else:
            await db.close()



def test_an_order_by_user_or_node_is_sqls_unless_a_value_is_not_a_string(
    engine_store: Synchronous, stored: list[dict[str, Any]], decoded: list[int]
) -> None:
    """
    The user's and the node's columns hold their strings: SQL sorts by them
    (and reads only the page) unless a row to sort has a value of another
    type there, which Python then sorts with the others as filter_list does.
    """
    memory = roundtrip(fresher(stored, MEMORY_IDS))
    fresh = {r["id"]: r for r in memory}
    union = [fresh.get(r["id"], r) for r in roundtrip(stored)]
    strings = [["credentials.data.username", "in", ["alice", "bob", "Alice", "\u00e9lodie"]]]
    for filters, order in (
        (strings, ["credentials.data.username", "id"]),
        (strings, ["-credentials.data.username", "-id"]),
        ([["node", "in", ["alpha", "beta"]]], ["-node", "-id"]),
        ([["node", "=", "gamma"]], ["nulls_first:node"]),
    ):
        options = {"order_by": order, "offset": 30, "limit": 10}
        decoded.clear()
        assert engine_store.query(memory, filters, options) == filter_list(union, filters, options), order
        assert len(decoded) <= 10 + len(MEMORY_IDS), order
    # Among all the jobs, some have a number or an object as their user: Python sorts.
    options = {"order_by": ["credentials.data.username", "id"], "offset": 30, "limit": 10}
    decoded.clear()
    assert engine_store.query(memory, [], options) == filter_list(union, [], options)
    assert len(decoded) == len(stored) - len(MEMORY_IDS)
