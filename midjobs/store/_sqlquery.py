"""
The part of a C{core.get_jobs} query that SQL can answer from the indexes.

L{translate} splits the top-level filters into conditions on indexed columns
(C{id}, C{method}, C{state}), which become a C{WHERE} clause, and the rest,
which are checked in Python on each candidate row with the same code as
C{filter_list}.  It turns C{order_by} into C{ORDER BY} when every key is a
column whose SQL order is the order C{filter_list} gives, so that a C{limit}
can stop the scan early.  Only translations that give exactly
C{filter_list}'s answer are made; anything else is left to Python.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import attrs

from ..query import OrderBy, Predicate, QueryOptions, compile_filters

__all__ = ["SqlQuery", "translate"]

#: Columns that hold a copy of the record's field, with the SQL order of filter_list.
_ORDER_COLUMNS = frozenset({"id", "method", "state", "time_started", "time_finished"})
#: Columns a condition may be translated on: never NULL, indexed.
_TEXT_COLUMNS = frozenset({"method", "state"})
_COMPARISONS = {"=": "=", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
#: More members than this in an C{in} list are checked in Python (SQLite's variable limit).
MAX_IN_MEMBERS = 500


@attrs.frozen
class SqlQuery:
    """
    @ivar where: C{""} or C{"WHERE ..."} with C{?} placeholders for C{params}.
    @ivar order: C{"ORDER BY ..."}: the query's order, ties by id.
    @ivar ordered: whether C{order} is the query's own C{order_by} (so the
        first rows are the first answers); C{False} means id order.
    @ivar residual: the filters SQL does not check, or C{None}.
    """

    where: str
    params: tuple[object, ...]
    order: str
    ordered: bool
    residual: Predicate | None


def _number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _text(value: object) -> bool:
    if not isinstance(value, str) or "\0" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _condition(spec: object) -> tuple[str, tuple[object, ...]] | None:
    """
    The SQL of one top-level C{[field, op, value]}, or C{None} if it must be checked in Python.
    """
    if not isinstance(spec, (list, tuple)) or len(spec) != 3:
        return None
    field, op, value = spec
    if field == "id":
        accept = _number
    elif field in _TEXT_COLUMNS:
        accept = _text
    else:
        return None
    if op in _COMPARISONS:
        if not accept(value):
            return None
        return f"{field} {_COMPARISONS[op]} ?", (value,)
    if op in ("in", "nin"):
        if not isinstance(value, (list, tuple, set, frozenset)) or len(value) > MAX_IN_MEMBERS:
            return None
        members = list(value)
        if field == "id":
            # filter_list compares 1 == 1.0; SQL would too, but keep to plain ints.
            ok = all(isinstance(m, int) and not isinstance(m, bool) for m in members)
        else:
            ok = all(_text(m) for m in members)
        if not ok:
            return None
        if not members:
            return ("FALSE", ()) if op == "in" else ("TRUE", ())
        marks = ", ".join("?" * len(members))
        return f"{field} {'IN' if op == 'in' else 'NOT IN'} ({marks})", tuple(members)
    return None


def _order(order_by: Sequence[OrderBy]) -> str | None:
    if not all(o.field in _ORDER_COLUMNS for o in order_by):
        return None
    terms = []
    for o in order_by:
        # filter_list puts nulls last in both directions unless told otherwise,
        # and keeps equal rows in id order (its sort is stable) even descending.
        nulls = "NULLS FIRST" if o.nulls_first else "NULLS LAST"
        terms.append(f"{o.field} {'DESC' if o.descending else 'ASC'} {nulls}")
        if o.field == "id":
            break  # ids are unique: nothing after them matters
    else:
        terms.append("id ASC")
    return "ORDER BY " + ", ".join(terms)


def translate(filters: Sequence[Any] | None, options: QueryOptions) -> SqlQuery:
    """
    The SQL for C{filters} (already validated) and C{options}.
    """
    clauses: list[str] = []
    params: list[object] = []
    rest: list[Any] = []
    for spec in filters or ():
        sql = _condition(spec)
        if sql is None:
            rest.append(spec)
        else:
            clauses.append(sql[0])
            params.extend(sql[1])
    order = _order(options.order_by)
    return SqlQuery(
        where=("WHERE " + " AND ".join(clauses)) if clauses else "",
        params=tuple(params),
        order=order or "ORDER BY id ASC",
        ordered=order is not None,
        residual=compile_filters(rest) if rest else None,
    )
