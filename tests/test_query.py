"""
Tests for L{midjobs.query}: the filters and options of C{core.get_jobs}.
"""

from __future__ import annotations

import copy
import datetime
import errno
import time
from typing import Any

import pytest

from midjobs.errors import CallError, ValidationErrors
from midjobs.query import (
    OPERATORS,
    OrderBy,
    QueryOptions,
    SelectField,
    compile_filters,
    filter_list,
    get_path,
    validate_options,
)


def _jobs() -> list[dict[str, Any]]:
    return [
        {
            "id": 1,
            "method": "core.job_test",
            "state": "SUCCESS",
            "description": "Sleeping",
            "progress": {"percent": 100, "description": "Done", "extra": None},
            "message_ids": ["a", "b"],
            "error": None,
            "exc_info": None,
            "tags": ["fast", "Blue"],
        },
        {
            "id": 2,
            "method": "filesystem.put",
            "state": "FAILED",
            "description": None,
            "progress": {"percent": 40, "description": "Writing", "extra": {"bytes": 10}},
            "message_ids": ["c"],
            "error": "[EINVAL] bad",
            "exc_info": {"type": "VALIDATION", "errno": 22},
            "tags": [],
        },
        {
            "id": 3,
            "method": "core.Download",
            "state": "RUNNING",
            "description": "Downloading",
            "progress": {"percent": None, "description": "", "extra": None},
            "message_ids": [],
            "error": None,
            "exc_info": None,
            "tags": None,
        },
        {
            "id": 4,
            "method": "system.debug",
            "state": "WAITING",
            "description": "sleeping",
            "progress": None,
            "message_ids": [7],
            "error": None,
            "exc_info": None,
        },
    ]


JOBS = _jobs()


def ids(rows: Any) -> list[int]:
    return [row["id"] for row in rows]


def match(*filters: Any, items: Any = None) -> list[int]:
    return ids(filter_list(JOBS if items is None else items, list(filters)))


def attributes(exc: pytest.ExceptionInfo[ValidationErrors]) -> list[str]:
    return [e.attribute for e in exc.value.errors]


@pytest.fixture(autouse=True)
def _items_unchanged():
    """
    No test may change the shared rows.
    """
    before = copy.deepcopy(JOBS)
    yield
    assert JOBS == before


# get_path ----------------------------------------------------------------------


class TestGetPath:
    def test_plain(self) -> None:
        assert get_path(JOBS[0], "id") == 1

    def test_dotted(self) -> None:
        assert get_path(JOBS[1], "progress.extra.bytes") == 10
        assert get_path(JOBS[1], "exc_info.type") == "VALIDATION"

    def test_missing_is_none(self) -> None:
        assert get_path(JOBS[0], "nope") is None
        assert get_path(JOBS[0], "progress.nope") is None
        assert get_path(JOBS[0], "nope.deeper.still") is None

    def test_through_none_is_none(self) -> None:
        assert get_path(JOBS[3], "progress.percent") is None
        assert get_path(JOBS[0], "exc_info.errno") is None

    def test_through_scalar_is_none(self) -> None:
        assert get_path(JOBS[0], "id.x") is None
        assert get_path(JOBS[0], "method.0") is None

    def test_list_index(self) -> None:
        assert get_path(JOBS[0], "message_ids.0") == "a"
        assert get_path(JOBS[0], "message_ids.1") == "b"
        assert get_path(JOBS[0], "message_ids.2") is None
        assert get_path(JOBS[0], "message_ids.x") is None

    def test_escaped_dot(self) -> None:
        item = {"a.b": 1, "a": {"b": 2}}
        assert get_path(item, "a\\.b") == 1
        assert get_path(item, "a.b") == 2

    def test_non_mapping_item(self) -> None:
        assert get_path(None, "a") is None
        assert get_path(5, "a.b") is None


# Operators ---------------------------------------------------------------------


class TestOperators:
    def test_equal(self) -> None:
        assert match(["state", "=", "FAILED"]) == [2]
        assert match(["id", "=", 3]) == [3]
        assert match(["error", "=", None]) == [1, 3, 4]

    def test_equal_structures(self) -> None:
        assert match(["message_ids", "=", ["c"]]) == [2]
        assert match(["exc_info", "=", {"type": "VALIDATION", "errno": 22}]) == [2]

    def test_not_equal(self) -> None:
        assert match(["state", "!=", "FAILED"]) == [1, 3, 4]
        assert match(["error", "!=", None]) == [2]

    def test_not_equal_missing_field(self) -> None:
        # A missing key reads as None, and None != "x".
        assert match(["tags", "!=", "x"]) == [1, 2, 3, 4]

    def test_greater(self) -> None:
        assert match(["id", ">", 2]) == [3, 4]
        assert match(["id", ">=", 2]) == [2, 3, 4]

    def test_less(self) -> None:
        assert match(["id", "<", 2]) == [1]
        assert match(["id", "<=", 2]) == [1, 2]

    def test_ordering_strings(self) -> None:
        assert match(["state", ">", "RUNNING"]) == [1, 4]

    def test_ordering_none_never_matches(self) -> None:
        # progress.percent is None for 3 and missing (None) for 4.
        for op in (">", ">=", "<", "<="):
            assert 3 not in match(["progress.percent", op, 0])
            assert 4 not in match(["progress.percent", op, 0])
        assert match(["progress.percent", ">=", 0]) == [1, 2]

    def test_ordering_with_none_value(self) -> None:
        for op in (">", ">=", "<", "<="):
            assert match(["id", op, None]) == []

    def test_ordering_incomparable_types(self) -> None:
        # "a" < 1 raises TypeError in Python; here it simply does not match.
        for op in (">", ">=", "<", "<="):
            assert match(["method", op, 1]) == []
            assert match(["id", op, "x"]) == []
            assert match(["message_ids", op, {}]) == []

    def test_ordering_datetimes(self) -> None:
        t = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        items = [{"id": 1, "t": t}, {"id": 2, "t": t + datetime.timedelta(1)}, {"id": 3, "t": None}]
        assert match(["t", ">", t], items=items) == [2]
        assert match(["t", "<=", t], items=items) == [1]
        # Naive against aware raises TypeError in Python: no match here.
        assert match(["t", ">", datetime.datetime(2000, 1, 1)], items=items) == []

    def test_regex_search(self) -> None:
        assert match(["method", "~", "^core\\."]) == [1, 3]
        # search, not match: the pattern may match anywhere.
        assert match(["method", "~", "put"]) == [2]
        assert match(["method", "~", "job_.*t$"]) == [1]

    def test_regex_non_strings_do_not_match(self) -> None:
        assert match(["description", "~", ".*"]) == [1, 3, 4]
        assert match(["id", "~", "1"]) == []
        assert match(["nope", "~", ""]) == []

    def test_in(self) -> None:
        assert match(["state", "in", ["SUCCESS", "RUNNING"]]) == [1, 3]
        assert match(["id", "in", [2, 4, 99]]) == [2, 4]
        assert match(["id", "in", []]) == []

    def test_in_accepts_tuple_and_set(self) -> None:
        assert match(["id", "in", (1, 2)]) == [1, 2]
        assert match(["id", "in", {3}]) == [3]

    def test_in_none(self) -> None:
        assert match(["description", "in", [None]]) == [2]
        assert match(["description", "in", ["Sleeping", None]]) == [1, 2]

    def test_in_unhashable_values(self) -> None:
        assert match(["message_ids", "in", [["c"], []]]) == [2, 3]
        assert match(["exc_info", "in", [{"type": "VALIDATION", "errno": 22}]]) == [2]
        # An unhashable field against hashable members: no TypeError.
        assert match(["message_ids", "in", ["a", "b"]]) == []

    def test_nin(self) -> None:
        assert match(["state", "nin", ["SUCCESS", "RUNNING"]]) == [2, 4]
        assert match(["id", "nin", []]) == [1, 2, 3, 4]

    def test_nin_none_matches(self) -> None:
        assert match(["description", "nin", ["Sleeping", "Downloading", "sleeping"]]) == [2]

    def test_rin(self) -> None:
        assert match(["message_ids", "rin", "a"]) == [1]
        assert match(["message_ids", "rin", 7]) == [4]
        assert match(["tags", "rin", "fast"]) == [1]

    def test_rin_non_lists_do_not_match(self) -> None:
        # tags is [] for 2, None for 3 and missing for 4; a string is not a list.
        assert match(["tags", "rin", None]) == []
        assert match(["method", "rin", "core"]) == []
        assert match(["id", "rin", 1]) == []

    def test_rin_unhashable(self) -> None:
        items = [{"id": 1, "s": {1, 2}}, {"id": 2, "s": [[1], [2]]}]
        assert match(["s", "rin", [1]], items=items) == [2]
        assert match(["s", "rin", 1], items=items) == [1]

    def test_rnin(self) -> None:
        assert match(["message_ids", "rnin", "a"]) == [2, 3, 4]

    def test_rnin_non_lists_match(self) -> None:
        assert match(["tags", "rnin", "fast"]) == [2, 3, 4]
        assert match(["method", "rnin", "core"]) == [1, 2, 3, 4]

    def test_starts_with(self) -> None:
        assert match(["method", "^", "core."]) == [1, 3]
        assert match(["method", "!^", "core."]) == [2, 4]

    def test_ends_with(self) -> None:
        assert match(["method", "$", "put"]) == [2]
        assert match(["method", "!$", "put"]) == [1, 3, 4]

    def test_affixes_non_strings(self) -> None:
        # None and non-strings never start with anything; the negations match them.
        assert match(["description", "^", ""]) == [1, 3, 4]
        assert match(["description", "!^", ""]) == [2]
        assert match(["id", "$", "1"]) == []
        assert match(["id", "!$", "1"]) == [1, 2, 3, 4]

    def test_every_operator_is_tested(self) -> None:
        assert OPERATORS == {
            "=", "!=", ">", ">=", "<", "<=", "~", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$",
        }


class TestCaseInsensitive:
    def test_equal(self) -> None:
        assert match(["state", "C=", "failed"]) == [2]
        assert match(["state", "=", "failed"]) == []
        assert match(["state", "C!=", "failed"]) == [1, 3, 4]

    def test_equal_non_strings_unaffected(self) -> None:
        assert match(["id", "C=", 2]) == [2]
        assert match(["error", "C=", None]) == [1, 3, 4]

    def test_casefold_not_just_lower(self) -> None:
        items = [{"id": 1, "name": "STRASSE"}, {"id": 2, "name": "straße"}]
        assert match(["name", "C=", "strasse"], items=items) == [1, 2]

    def test_ordering(self) -> None:
        items = [{"id": 1, "n": "b"}, {"id": 2, "n": "B"}, {"id": 3, "n": "a"}]
        assert match(["n", ">", "a"], items=items) == [1]  # "B" < "a"
        assert match(["n", "C>", "A"], items=items) == [1, 2]
        assert match(["n", "C<=", "A"], items=items) == [3]

    def test_regex(self) -> None:
        assert match(["method", "~", "download"]) == []
        assert match(["method", "C~", "download"]) == [3]

    def test_regex_escapes_keep_their_meaning(self) -> None:
        # A case-insensitive regex is not a casefolded one: \S stays "non-space".
        items = [{"id": 1, "n": "A B"}, {"id": 2, "n": "AB"}]
        assert match(["n", "C~", "^a\\Sb$"], items=items) == []
        assert match(["n", "C~", "^a\\sb$"], items=items) == [1]
        assert match(["n", "C~", "^\\w+$"], items=items) == [2]

    def test_in(self) -> None:
        assert match(["state", "Cin", ["success", "Running"]]) == [1, 3]
        assert match(["state", "Cnin", ["success", "Running"]]) == [2, 4]
        assert match(["id", "Cin", [1, "x"]]) == [1]

    def test_rin(self) -> None:
        assert match(["tags", "rin", "blue"]) == []
        assert match(["tags", "Crin", "blue"]) == [1]
        assert match(["tags", "Crnin", "BLUE"]) == [2, 3, 4]

    def test_affixes(self) -> None:
        assert match(["method", "C^", "CORE."]) == [1, 3]
        assert match(["method", "C!^", "CORE."]) == [2, 4]
        assert match(["method", "C$", "LOAD"]) == [3]
        assert match(["method", "C!$", "LOAD"]) == [1, 2, 4]
        assert match(["description", "C^", "SLEEP"]) == [1, 4]


class TestCombinations:
    def test_no_filters(self) -> None:
        assert match() == [1, 2, 3, 4]
        assert ids(filter_list(JOBS)) == [1, 2, 3, 4]
        assert ids(filter_list(JOBS, None)) == [1, 2, 3, 4]

    def test_and(self) -> None:
        assert match(["method", "^", "core."], ["state", "=", "RUNNING"]) == [3]
        assert match(["id", ">", 1], ["id", "<", 4], ["error", "=", None]) == [3]

    def test_tuples_accepted(self) -> None:
        assert ids(filter_list(JOBS, (("id", "=", 1),))) == [1]

    def test_or(self) -> None:
        assert match(["OR", [["id", "=", 1], ["state", "=", "RUNNING"]]]) == [1, 3]

    def test_or_single_member(self) -> None:
        assert match(["OR", [["id", "=", 2]]]) == [2]

    def test_or_with_conjunction_member(self) -> None:
        f = ["OR", [[["method", "^", "core."], ["state", "=", "SUCCESS"]], ["id", "=", 4]]]
        assert match(f) == [1, 4]

    def test_or_anded_with_others(self) -> None:
        assert match(["OR", [["id", "=", 1], ["id", "=", 2]]], ["state", "=", "FAILED"]) == [2]

    def test_two_ors(self) -> None:
        assert match(
            ["OR", [["id", "=", 1], ["id", "=", 2], ["id", "=", 3]]],
            ["OR", [["state", "=", "FAILED"], ["state", "=", "RUNNING"]]],
        ) == [2, 3]

    def test_nested_or(self) -> None:
        f = ["OR", [["id", "=", 4], ["OR", [["id", "=", 1], ["id", "=", 2]]]]]
        assert match(f) == [1, 2, 4]

    def test_or_inside_conjunction_member(self) -> None:
        f = ["OR", [
            [["method", "^", "core."], ["OR", [["state", "=", "RUNNING"], ["id", "=", 99]]]],
            ["id", "=", 2],
        ]]
        assert match(f) == [2, 3]

    def test_dotted_fields(self) -> None:
        assert match(["progress.percent", "=", 40]) == [2]
        assert match(["progress.extra.bytes", ">", 5]) == [2]
        assert match(["exc_info.type", "=", "VALIDATION"]) == [2]
        assert match(["progress.percent", "=", None]) == [3, 4]
        assert match(["message_ids.0", "=", "c"]) == [2]

    def test_compile_filters(self) -> None:
        predicate = compile_filters([["OR", [["id", "=", 1], ["progress.percent", ">", 50]]]])
        assert [predicate(job) for job in JOBS] == [True, False, False, False]
        assert compile_filters(None)({}) is True
        assert compile_filters([])({"x": 1}) is True

    def test_generator_items(self) -> None:
        assert ids(filter_list((j for j in JOBS), [["id", ">", 2]])) == [3, 4]
        assert filter_list((j for j in JOBS), [], {"count": True}) == 4

    def test_plain_rows_returned_as_they_are(self) -> None:
        rows = filter_list(JOBS, [["id", "=", 1]])
        assert rows[0] is JOBS[0]

    def test_large(self) -> None:
        items = [{"id": i, "progress": {"percent": i % 101}, "state": "RUNNING"} for i in range(100_000)]
        start = time.perf_counter()
        rows = filter_list(items, [["progress.percent", ">=", 100], ["state", "=", "RUNNING"]])
        elapsed = time.perf_counter() - start
        assert len(rows) == len(range(100, 100_000, 101))
        # Generous: catches per-row compilation, not a benchmark.
        assert elapsed < 5


# Options -----------------------------------------------------------------------


class TestSelect:
    def test_fields(self) -> None:
        rows = filter_list(JOBS, [["id", "<", 3]], {"select": ["id", "state"]})
        assert rows == [{"id": 1, "state": "SUCCESS"}, {"id": 2, "state": "FAILED"}]

    def test_rows_are_copies(self) -> None:
        rows = filter_list(JOBS, [], {"select": ["id"]})
        rows[0]["id"] = 99
        assert JOBS[0]["id"] == 1

    def test_dotted_builds_nested(self) -> None:
        rows = filter_list(JOBS, [["id", "=", 2]], {"select": ["id", "progress.percent"]})
        assert rows == [{"id": 2, "progress": {"percent": 40}}]

    def test_dotted_merges(self) -> None:
        rows = filter_list(
            JOBS, [["id", "=", 2]],
            {"select": ["progress.percent", "progress.extra.bytes", "progress.description"]},
        )
        assert rows == [{"progress": {"percent": 40, "extra": {"bytes": 10}, "description": "Writing"}}]

    def test_whole_then_part_does_not_mutate(self) -> None:
        rows = filter_list(JOBS, [["id", "=", 2]], {"select": ["progress", "progress.percent"]})
        assert rows[0]["progress"] == JOBS[1]["progress"]
        rows[0]["progress"]["percent"] = 0
        assert JOBS[1]["progress"]["percent"] == 40

    def test_alias(self) -> None:
        rows = filter_list(
            JOBS, [["id", "=", 2]],
            {"select": ["id", ["progress.percent", "pct"], ["state", "status"]]},
        )
        assert rows == [{"id": 2, "pct": 40, "status": "FAILED"}]

    def test_alias_is_a_plain_key(self) -> None:
        rows = filter_list(JOBS, [["id", "=", 2]], {"select": [["id", "a.b"]]})
        assert rows == [{"a.b": 2}]

    def test_alias_list_index(self) -> None:
        rows = filter_list(JOBS, [["id", "=", 1]], {"select": [["message_ids.0", "first"]]})
        assert rows == [{"first": "a"}]

    def test_missing_fields_left_out(self) -> None:
        rows = filter_list(
            JOBS, [["id", "=", 4]], {"select": ["id", "tags", "nope.x", ["nope", "alias"]]}
        )
        assert rows == [{"id": 4}]

    def test_none_values_kept(self) -> None:
        rows = filter_list(JOBS, [["id", "=", 1]], {"select": ["error", "progress.extra"]})
        assert rows == [{"error": None, "progress": {"extra": None}}]

    def test_null_parent(self) -> None:
        rows = filter_list(JOBS, [["id", "=", 4]], {"select": ["progress.percent", "progress.x"]})
        assert rows == [{"progress": None}]

    def test_empty_select_is_no_select(self) -> None:
        rows = filter_list(JOBS, [["id", "=", 1]], {"select": []})
        assert rows[0] is JOBS[0]

    def test_with_get(self) -> None:
        row = filter_list(JOBS, [["id", "=", 2]], {"select": ["id", "progress.percent"], "get": True})
        assert row == {"id": 2, "progress": {"percent": 40}}


class TestOrderBy:
    def test_ascending(self) -> None:
        assert ids(filter_list(JOBS, [], {"order_by": ["method"]})) == [3, 1, 2, 4]

    def test_descending(self) -> None:
        assert ids(filter_list(JOBS, [], {"order_by": ["-id"]})) == [4, 3, 2, 1]

    def test_dotted(self) -> None:
        assert ids(filter_list(JOBS, [["id", "<", 3]], {"order_by": ["progress.percent"]})) == [2, 1]

    def test_nulls_last_by_default(self) -> None:
        assert ids(filter_list(JOBS, [], {"order_by": ["progress.percent"]})) == [2, 1, 3, 4]
        assert ids(filter_list(JOBS, [], {"order_by": ["-progress.percent"]})) == [1, 2, 3, 4]
        assert ids(filter_list(JOBS, [], {"order_by": ["description"]})) == [3, 1, 4, 2]

    def test_nulls_last(self) -> None:
        assert ids(filter_list(JOBS, [], {"order_by": ["nulls_last:-progress.percent"]})) == [1, 2, 3, 4]

    def test_nulls_first(self) -> None:
        assert ids(filter_list(JOBS, [], {"order_by": ["nulls_first:progress.percent"]})) == [3, 4, 2, 1]
        assert ids(filter_list(JOBS, [], {"order_by": ["nulls_first:-progress.percent"]})) == [3, 4, 1, 2]

    def test_stable(self) -> None:
        items = [{"id": i, "k": i % 2} for i in range(6)]
        assert ids(filter_list(items, [], {"order_by": ["k"]})) == [0, 2, 4, 1, 3, 5]
        assert ids(filter_list(items, [], {"order_by": ["-k"]})) == [1, 3, 5, 0, 2, 4]

    def test_several_keys(self) -> None:
        items = [
            {"id": 1, "a": 1, "b": "y"},
            {"id": 2, "a": 2, "b": "x"},
            {"id": 3, "a": 1, "b": "x"},
            {"id": 4, "a": 2, "b": None},
            {"id": 5, "a": None, "b": "x"},
        ]
        assert ids(filter_list(items, [], {"order_by": ["a", "b"]})) == [3, 1, 2, 4, 5]
        assert ids(filter_list(items, [], {"order_by": ["-a", "-b"]})) == [2, 4, 1, 3, 5]
        assert ids(filter_list(items, [], {"order_by": ["nulls_first:a", "nulls_first:b"]})) == [5, 3, 1, 4, 2]

    def test_mixed_types_do_not_raise(self) -> None:
        items = [{"id": 1, "v": "b"}, {"id": 2, "v": 3}, {"id": 3, "v": {"x": 1}},
                 {"id": 4, "v": 1.5}, {"id": 5, "v": "a"}, {"id": 6, "v": {"x": 0}}]
        # Numbers, then strings, then other types; dicts by repr.
        assert ids(filter_list(items, [], {"order_by": ["v"]})) == [4, 2, 5, 1, 6, 3]
        assert ids(filter_list(items, [], {"order_by": ["-v"]})) == [3, 6, 1, 5, 2, 4]

    def test_does_not_reorder_input(self) -> None:
        items = [{"id": 2}, {"id": 1}]
        filter_list(items, [], {"order_by": ["id"]})
        assert ids(items) == [2, 1]

    def test_field_named_like_prefix(self) -> None:
        assert OrderBy.parse("nulls_first:-a") == OrderBy("a", descending=True, nulls_first=True)
        assert OrderBy.parse("nulls_last:b") == OrderBy("b")
        assert OrderBy.parse("-c") == OrderBy("c", descending=True)


class TestPaging:
    def test_offset(self) -> None:
        assert ids(filter_list(JOBS, [], {"offset": 2})) == [3, 4]
        assert ids(filter_list(JOBS, [], {"offset": 10})) == []

    def test_limit(self) -> None:
        assert ids(filter_list(JOBS, [], {"limit": 2})) == [1, 2]
        assert ids(filter_list(JOBS, [], {"limit": 10})) == [1, 2, 3, 4]

    def test_limit_zero_is_no_limit(self) -> None:
        assert ids(filter_list(JOBS, [], {"limit": 0})) == [1, 2, 3, 4]

    def test_offset_and_limit(self) -> None:
        assert ids(filter_list(JOBS, [], {"offset": 1, "limit": 2})) == [2, 3]

    def test_after_order_and_filters(self) -> None:
        rows = filter_list(JOBS, [["id", ">", 1]], {"order_by": ["-id"], "offset": 1, "limit": 1})
        assert ids(rows) == [3]

    def test_null_means_default(self) -> None:
        options = {"offset": None, "limit": None, "select": None, "order_by": None,
                   "count": None, "get": None, "extra": None}
        assert ids(filter_list(JOBS, [], options)) == [1, 2, 3, 4]


class TestCount:
    def test_count(self) -> None:
        assert filter_list(JOBS, [], {"count": True}) == 4
        assert filter_list(JOBS, [["id", ">", 1]], {"count": True}) == 3
        assert filter_list([], [], {"count": True}) == 0

    def test_ignores_paging(self) -> None:
        assert filter_list(JOBS, [["id", ">", 1]], {"count": True, "offset": 1, "limit": 1}) == 3

    def test_false(self) -> None:
        assert isinstance(filter_list(JOBS, [], {"count": False}), list)

    def test_wins_over_get(self) -> None:
        assert filter_list(JOBS, [["id", "=", 99]], {"count": True, "get": True}) == 0


class TestGet:
    def test_first(self) -> None:
        assert filter_list(JOBS, [["id", ">", 1]], {"get": True}) is JOBS[1]

    def test_after_order(self) -> None:
        assert filter_list(JOBS, [], {"get": True, "order_by": ["-id"]})["id"] == 4

    def test_after_offset(self) -> None:
        assert filter_list(JOBS, [], {"get": True, "offset": 2})["id"] == 3
        assert filter_list(JOBS, [], {"get": True, "order_by": ["-id"], "offset": 1})["id"] == 3

    def test_not_found(self) -> None:
        with pytest.raises(CallError) as exc:
            filter_list(JOBS, [["id", "=", 99]], {"get": True})
        assert exc.value.errno == errno.ENOENT
        assert exc.value.errmsg == "Object not found"
        assert not isinstance(exc.value, ValidationErrors)

    def test_not_found_past_offset(self) -> None:
        with pytest.raises(CallError) as exc:
            filter_list(JOBS, [], {"get": True, "offset": 4})
        assert exc.value.errno == errno.ENOENT
        with pytest.raises(CallError):
            filter_list(JOBS, [], {"get": True, "offset": 4, "order_by": ["id"]})

    def test_not_found_empty(self) -> None:
        with pytest.raises(CallError) as exc:
            filter_list([], None, {"get": True})
        assert exc.value.errno == errno.ENOENT

    def test_stops_at_first_match(self) -> None:
        seen = []

        def rows():
            for job in JOBS:
                seen.append(job["id"])
                yield job

        assert filter_list(rows(), [["id", ">", 1]], {"get": True})["id"] == 2
        assert seen == [1, 2]


class TestValidateOptions:
    def test_defaults(self) -> None:
        assert validate_options(None) == QueryOptions()
        assert validate_options({}) == QueryOptions()
        defaults = QueryOptions()
        assert (defaults.select, defaults.order_by, defaults.offset, defaults.limit) == ((), (), 0, 0)
        assert (defaults.count, defaults.get, defaults.extra) == (False, False, {})

    def test_normalised(self) -> None:
        options = validate_options({
            "select": ["id", ["progress.percent", "pct"]],
            "order_by": ["nulls_first:-id", "method"],
            "offset": 1, "limit": 2, "count": False, "get": True, "extra": {"raw_result": True},
        })
        assert options.select == (SelectField("id"), SelectField("progress.percent", "pct"))
        assert options.order_by == (OrderBy("id", True, True), OrderBy("method"))
        assert (options.offset, options.limit, options.count, options.get) == (1, 2, False, True)
        assert options.extra == {"raw_result": True}

    def test_idempotent(self) -> None:
        options = validate_options({"limit": 3})
        assert validate_options(options) is options
        assert ids(filter_list(JOBS, [], options)) == [1, 2, 3]

    def test_frozen(self) -> None:
        with pytest.raises(AttributeError):
            validate_options({}).limit = 5  # type: ignore[misc]

    def test_extra_ignored(self) -> None:
        assert ids(filter_list(JOBS, [], {"extra": {"raw_result": True, "whatever": 1}})) == [1, 2, 3, 4]

    def test_truenas_options_accepted(self) -> None:
        options = {"relationships": True, "extend": None, "extend_context": None,
                   "prefix": None, "force_sql_filters": False}
        assert validate_options(options) == QueryOptions()


# Validation --------------------------------------------------------------------


class TestFilterValidation:
    @pytest.mark.parametrize(
        "filters, attribute",
        [
            ("id = 1", "filters"),
            ({"id": 1}, "filters"),
            (5, "filters"),
            (["id", "=", 1], "filters"),  # one filter, not a list of them
            (["OR", [["id", "=", 1]]], "filters"),
            ([["id", "=", 1], "x"], "filters.1"),
            ([["id", "="]], "filters.0"),
            ([["id", "=", 1, 2]], "filters.0"),
            ([[]], "filters.0"),
            ([None], "filters.0"),
            ([{"id": 1}], "filters.0"),
            ([["id", "=", 1], ["id", "==", 1]], "filters.1"),
            ([["id", "like", 1]], "filters.0"),
            ([["id", "c=", 1]], "filters.0"),
            ([["id", "CC=", 1]], "filters.0"),
            ([["id", "C", 1]], "filters.0"),
            ([["id", 1, 1]], "filters.0"),
            ([[1, "=", 1]], "filters.0"),
            ([["", "=", 1]], "filters.0"),
            ([["OR", "=", 1]], None),  # a field called OR: valid
            ([["AND", [["id", "=", 1]]]], "filters.0"),
            ([["or", [["id", "=", 1]]]], "filters.0"),
            ([["OR", ["id", "=", 1]]], "filters.0"),  # members must be filters
            ([["OR", [["id", "=", 1], "x"]]], "filters.0.1.1"),
            ([["OR", "id"]], "filters.0"),
            ([["OR", None]], "filters.0"),
            ([["OR", {}]], "filters.0"),
            ([["OR", []]], "filters.0"),
            ([["OR", [["id", "=", 1], ["id", "?", 2]]]], "filters.0.1.1"),
            ([["OR", [["id", "=", 1], [["id", "=", 1], ["x", "bad", 2]]]]], "filters.0.1.1.1"),
            ([["OR", [["OR", [["id", "bad", 1]]]]]], "filters.0.1.0.1.0"),
            ([["id", "~", "("]], "filters.0"),
            ([["id", "C~", "[a-"]], "filters.0"),
            ([["id", "~", 5]], "filters.0"),
            ([["id", "in", "abc"]], "filters.0"),
            ([["id", "nin", 5]], "filters.0"),
            ([["id", "in", None]], "filters.0"),
            ([["id", "^", 1]], "filters.0"),
            ([["id", "!^", None]], "filters.0"),
            ([["id", "$", ["a"]]], "filters.0"),
            ([["id", "C!$", 2]], "filters.0"),
        ],
    )
    def test_invalid(self, filters: Any, attribute: str | None) -> None:
        if attribute is None:
            assert filter_list(JOBS, filters) == []
            compile_filters(filters)
            return
        with pytest.raises(ValidationErrors) as exc:
            compile_filters(filters)
        assert attributes(exc) == [attribute]
        assert exc.value.errno == errno.EINVAL
        # Also through filter_list, and with nothing to filter.
        for items in (JOBS, []):
            with pytest.raises(ValidationErrors) as exc:
                filter_list(items, filters)
            assert attributes(exc) == [attribute]

    def test_all_errors_reported(self) -> None:
        with pytest.raises(ValidationErrors) as exc:
            compile_filters([["id", "=", 1], ["id", "bad", 1], "x", ["OR", []]])
        assert attributes(exc) == ["filters.1", "filters.2", "filters.3"]
        assert exc.value.extra[0][0] == "filters.1"
        assert "Unknown operator 'bad'" in exc.value.extra[0][1]

    def test_deep_nesting_refused(self) -> None:
        f: Any = ["id", "=", 1]
        for _ in range(100):
            f = ["OR", [f]]
        with pytest.raises(ValidationErrors):
            compile_filters([f])

    def test_moderate_nesting_allowed(self) -> None:
        f: Any = ["id", "=", 1]
        for _ in range(10):
            f = ["OR", [f]]
        assert match(f) == [1]

    def test_regex_valid_values(self) -> None:
        assert match(["method", "~", ""]) == [1, 2, 3, 4]

    def test_generator_not_consumed_on_error(self) -> None:
        consumed = []

        def rows():
            consumed.append(True)
            yield from JOBS

        with pytest.raises(ValidationErrors):
            filter_list(rows(), [["id", "bad", 1]])
        assert consumed == []


class TestOptionsValidation:
    @pytest.mark.parametrize(
        "options, attribute",
        [
            ([], "options"),
            ("limit", "options"),
            (5, "options"),
            ({"bogus": 1}, "options.bogus"),
            ({"bogus": None}, "options.bogus"),
            ({"Limit": 1}, "options.Limit"),
            ({"limit": -1}, "options.limit"),
            ({"limit": "5"}, "options.limit"),
            ({"limit": 1.0}, "options.limit"),
            ({"limit": True}, "options.limit"),
            ({"offset": -3}, "options.offset"),
            ({"offset": "1"}, "options.offset"),
            ({"offset": False}, "options.offset"),
            ({"offset": [1]}, "options.offset"),
            # Past what any list holds, and past SQL's integers.
            ({"offset": 10**30}, "options.offset"),
            ({"limit": 2**63}, "options.limit"),
            ({"count": 1}, "options.count"),
            ({"count": "true"}, "options.count"),
            ({"get": 0}, "options.get"),
            ({"extra": []}, "options.extra"),
            ({"extra": "raw"}, "options.extra"),
            ({"select": "id"}, "options.select"),
            ({"select": {"id": 1}}, "options.select"),
            ({"select": ["id", 5]}, "options.select.1"),
            ({"select": [""]}, "options.select.0"),
            ({"select": [["id"]]}, "options.select.0"),
            ({"select": [["id", "a", "b"]]}, "options.select.0"),
            ({"select": [["id", 1]]}, "options.select.0"),
            ({"select": [["id", ""]]}, "options.select.0"),
            ({"order_by": "id"}, "options.order_by"),
            ({"order_by": [1]}, "options.order_by.0"),
            ({"order_by": ["id", ""]}, "options.order_by.1"),
            ({"order_by": ["-"]}, "options.order_by.0"),
            ({"order_by": ["nulls_first:"]}, "options.order_by.0"),
            ({"order_by": ["nulls_last:-"]}, "options.order_by.0"),
            ({"relationships": "yes"}, "options.relationships"),
            ({"force_sql_filters": 1}, "options.force_sql_filters"),
            ({"prefix": 5}, "options.prefix"),
        ],
    )
    def test_invalid(self, options: Any, attribute: str) -> None:
        with pytest.raises(ValidationErrors) as exc:
            validate_options(options)
        assert attributes(exc) == [attribute]
        for items in (JOBS, []):
            with pytest.raises(ValidationErrors) as exc:
                filter_list(items, [], options)
            assert attributes(exc) == [attribute]

    def test_all_errors_reported(self) -> None:
        with pytest.raises(ValidationErrors) as exc:
            validate_options({"limit": -1, "offset": "x", "nope": 1})
        assert sorted(attributes(exc)) == ["options.limit", "options.nope", "options.offset"]

    def test_filters_and_options_together(self) -> None:
        with pytest.raises(ValidationErrors) as exc:
            filter_list([], [["id", "bad", 1]], {"limit": "x"})
        assert attributes(exc) == ["filters.0", "options.limit"]

    def test_validation_before_get(self) -> None:
        # A bad option is a validation error, not "Object not found".
        with pytest.raises(ValidationErrors):
            filter_list([], [], {"get": True, "limit": -1})


def test_decimal_nan_does_not_raise() -> None:
    from decimal import Decimal

    items = [{"id": 1, "v": Decimal("NaN")}, {"id": 2, "v": Decimal(1)}, {"id": 3, "v": 0.5}]
    assert match(["v", ">", 0], items=items) == [2, 3]
    assert sorted(ids(filter_list(items, [], {"order_by": ["v"]}))) == [1, 2, 3]
