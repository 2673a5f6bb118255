"""
The part of a C{core.get_jobs} query that SQL can answer.

L{translate} sorts the filters into three kinds.  What SQL answers exactly:
conditions on the columns that hold a copy of a record's field (L{COLUMNS}),
and C{OR}s of them.  What SQL only narrows: a search for a literal text
(C{~}, C{C~}, C{rin}, C{Crin}) becomes a C{LIKE} on the stored record that
every match passes (a superset), and Python checks the candidates exactly.
And the residual, which only Python checks, with the same code as
C{filter_list}.  C{order_by} becomes C{ORDER BY} when every key is a column
whose SQL order is C{filter_list}'s order.

When nothing is left for Python (L{SqlQuery.exact}) and the order is SQL's,
the store counts with C{COUNT(*)} and pages with C{LIMIT}/C{OFFSET}.
Only translations that give exactly C{filter_list}'s answer are made (a
narrowing is never smaller than it); anything else is left to Python.
"""

from __future__ import annotations

import datetime
import enum
import math
from typing import Any, Callable, Mapping, Sequence

import attrs

from ..query import OrderBy, Predicate, QueryOptions, compile_filters
from ..wire_json import to_wire

__all__ = ["COLUMNS", "COPIED", "POSTGRESQL", "SQLITE", "Dialect", "SqlQuery", "copied_fields", "literal_of", "translate"]

#: More members than this in an C{in} list are checked in Python (SQLite's variable limit).
MAX_IN_MEMBERS = 500

#: The most characters of a searched text that its C{LIKE} pattern keeps
#: (what follows is matched by C{%}: still a superset).
MAX_LIKE_CHARACTERS = 200

#: Numbers a column of numbers holds exactly on both engines (PostgreSQL's is a double).
_MAX_EXACT = 2**53


@attrs.frozen
class Dialect:
    """
    What differs between the engines in the SQL of a query.

    @ivar folded_record: the SQL of the record's text with its ASCII letters
        in lower case, for a C{LIKE} whose pattern is in lower case.
    @ivar excluded: the SQL of "the row's id is not in the ids of one
        parameter", that parameter made by C{ids}.
    @ivar ids: the parameter of C{excluded} for a list of ids.
    @ivar like_any: the SQL of "the record matches one of C{n} C{LIKE}
        patterns" (escape C{\\}, in lower case), one parameter each.
    @ivar present: the SQL of "the record holds a value other than
        C{null} at this path" (its keys).
    """

    folded_record: str
    excluded: str
    ids: Callable[[Sequence[int]], object]
    like_any: Callable[[int], str]
    present: Callable[[tuple[str, ...]], str]


def _json_ids(ids: Sequence[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def _array_ids(ids: Sequence[int]) -> str:
    return "{" + ",".join(str(int(i)) for i in ids) + "}"


def _sqlite_like_any(patterns: int) -> str:
    test = " OR ".join(["record LIKE ? ESCAPE '\\'"] * patterns)
    return f"({test})" if patterns > 1 else test


def _pg_like_any(patterns: int) -> str:
    # The record is folded once, whatever the number of patterns.
    marks = ", ".join("?" * patterns)
    return f'lower(record COLLATE "C") LIKE ANY (ARRAY[{marks}])'


def _sqlite_present(keys: tuple[str, ...]) -> str:
    path = "$." + ".".join(keys)
    # json_type is NULL where the path is missing, 'null' for a JSON null.
    return f"CASE WHEN json_valid(record) THEN json_type(record, '{path}') END NOT IN ('null')"


def _pg_present(keys: tuple[str, ...]) -> str:
    return f"midjobs_json_kind(record, '{{{','.join(keys)}}}') <> 'null'"


#: SQLite: C{LIKE} ignores the case of ASCII letters (and only theirs).
SQLITE = Dialect(
    folded_record="record",
    excluded="id NOT IN (SELECT value FROM json_each(?))",
    ids=_json_ids,
    like_any=_sqlite_like_any,
    present=_sqlite_present,
)

#: PostgreSQL: C{lower} in the C{"C"} collation folds ASCII letters alone,
#: whatever the database's locale.
POSTGRESQL = Dialect(
    folded_record='lower(record COLLATE "C")',
    excluded="id NOT IN (SELECT unnest(CAST(? AS bigint[])))",
    ids=_array_ids,
    like_any=_pg_like_any,
    present=_pg_present,
)


class _Kind(enum.Enum):
    """
    The values a column holds, which decide the conditions it answers.
    """

    ID = "id"  #: an integer, never NULL
    TEXT = "text"  #: the field's string, never NULL
    #: the field's string, or NULL when it is anything else (or holds a NUL
    #: or a lone surrogate, which the engines cannot store)
    NULLABLE_TEXT = "nullable text"
    #: the field's number (a boolean as 0 or 1) up to 2**53, or NULL when it is anything else
    NUMBER = "number"
    TIME = "time"  #: the field's datetime in seconds since the epoch (whole milliseconds), or NULL


@attrs.frozen
class _Column:
    name: str
    kind: _Kind


#: The columns that hold a copy of a record's field, by that field.
COLUMNS: dict[str, _Column] = {
    "id": _Column("id", _Kind.ID),
    "method": _Column("method", _Kind.TEXT),
    "state": _Column("state", _Kind.TEXT),
    "credentials.data.username": _Column("username", _Kind.NULLABLE_TEXT),
    "node": _Column("job_node", _Kind.NULLABLE_TEXT),
    "exc_info.errno": _Column("errno", _Kind.NUMBER),
    "time_started": _Column("time_started", _Kind.TIME),
    "time_finished": _Column("time_finished", _Kind.TIME),
}

#: The fields whose SQL order (nulls apart) is filter_list's: the columns
#: that hold every non-null value of their field.
_ORDER_COLUMNS = frozenset({"id", "method", "state", "time_started", "time_finished"})

#: The fields whose column holds their strings (in SQL's order, which is
#: Python's) and NULL for anything else: their SQL order is filter_list's
#: unless a row to sort has a value that is not such a string
#: (L{SqlQuery.guard}), as is rare.
_GUARDED_ORDER_COLUMNS = {"credentials.data.username": ("credentials", "data", "username"), "node": ("node",)}

#: Columns that hold only some values of their field (NULL for the others):
#: they answer equality, not order (a string with a NUL orders with others in Python).
_UNORDERED = frozenset({_Kind.NULLABLE_TEXT, _Kind.NUMBER})

_COMPARISONS = {"=": "=", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}

#: Fields whose stored text is not what Python sees (the store sets them
#: when it reads a row): a search in the record's text says nothing of them.
_NOT_IN_TEXT = frozenset({"id", "logs_path"})


@attrs.frozen
class SqlQuery:
    """
    @ivar where: C{""} or C{"WHERE ..."} with C{?} placeholders for C{params}.
    @ivar order: C{"ORDER BY ..."}: the query's order, ties by id.
    @ivar ordered: whether C{order} is the query's own C{order_by} (so the
        first rows are the first answers); C{False} means id order.
    @ivar residual: what Python checks on each row SQL finds, or C{None}
        when SQL's answer is exact.
    @ivar guard: C{None}, or a condition that no row SQL finds may meet for
        C{order} to be the query's (a value of a sorted field its column
        does not hold); when one does, the order is Python's.
    """

    where: str
    params: tuple[object, ...]
    order: str
    ordered: bool
    residual: Predicate | None
    guard: str | None = None

    @property
    def exact(self) -> bool:
        """
        Whether the rows SQL finds are exactly the matches.
        """
        return self.residual is None


@attrs.frozen
class _Sql:
    """
    The SQL of a filter: C{exact}ly its matches, or a superset of them.
    """

    text: str
    params: tuple[object, ...]
    exact: bool
    #: The C{LIKE} patterns of a search, which an C{OR} joins in one test.
    patterns: tuple[str, ...] = ()


#: The columns written from a record for queries alone, in L{copied_fields}' order.
COPIED = ("username", "job_node", "errno")


def copied_fields(record: Mapping[str, Any]) -> tuple[str | None, str | None, int | float | None]:
    """
    The values of the L{COPIED} columns for C{record}: cheap, it is on the
    write path of every job.
    """
    credentials = record.get("credentials")
    username = None
    # As the stored JSON has them: a dict (subclass) is an object, a string a string.
    if isinstance(credentials, dict):
        data = credentials.get("data")
        if isinstance(data, dict):
            username = data.get("username")
    exc_info = record.get("exc_info")
    errno = exc_info.get("errno") if isinstance(exc_info, dict) else None
    return _stored_text(username), _stored_text(record.get("node")), _stored_number(errno)


def _stored_text(value: object) -> str | None:
    return str(value) if isinstance(value, str) and _text(value) else None


def _stored_number(value: object) -> int | float | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and _number(value):
        return int(value)
    if isinstance(value, float) and _number(value):
        return float(value)
    return None


def _number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_MAX_EXACT <= value <= _MAX_EXACT
    return isinstance(value, float) and math.isfinite(value)


def _id_value(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


def _text(value: object) -> bool:
    if not isinstance(value, str) or "\0" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _seconds(value: object) -> float | None:
    """
    The column's value for a time C{value} of a filter, or C{None} if the
    column cannot compare with it exactly: only aware datetimes of whole
    milliseconds, as the wire's C{$date} gives (a naive one never equals
    nor orders with the records' aware times, in Python).
    """
    if not isinstance(value, datetime.datetime) or value.utcoffset() is None or value.microsecond % 1000:
        return None
    return float(to_wire(value)["$date"] / 1000)


def _parameter(column: _Column, value: object) -> tuple[bool, object]:
    """
    Whether C{column} compares exactly with C{value}, and the parameter for it.
    """
    if column.kind == _Kind.ID:
        return _id_value(value), value
    if column.kind in (_Kind.TEXT, _Kind.NULLABLE_TEXT):
        return _text(value), value
    if column.kind == _Kind.NUMBER:
        return _number(value), value
    seconds = _seconds(value)
    return seconds is not None, seconds


def _column_condition(column: _Column, op: str, value: object) -> _Sql | None:
    nullable = column.kind not in (_Kind.ID, _Kind.TEXT)
    name = column.name
    if op in _COMPARISONS:
        ok, param = _parameter(column, value)
        if not ok or op not in ("=", "!=") and column.kind in _UNORDERED:
            return None
        if op == "!=" and nullable:
            # filter_list: a missing value, or one of another type, is not equal.
            return _Sql(f"({name} IS NULL OR {name} != ?)", (param,), True)
        return _Sql(f"{name} {_COMPARISONS[op]} ?", (param,), True)
    if op in ("in", "nin") and column.kind != _Kind.TIME:
        if not isinstance(value, (list, tuple, set, frozenset)) or len(value) > MAX_IN_MEMBERS:
            return None
        members = list(value)
        if column.kind == _Kind.ID:
            # filter_list compares 1 == 1.0; SQL would too, but keep to plain ints.
            ok = all(isinstance(m, int) and not isinstance(m, bool) for m in members)
        else:
            ok = all(_parameter(column, m)[0] for m in members)
        if not ok:
            return None
        if not members:
            return _Sql("FALSE", (), True) if op == "in" else _Sql("TRUE", (), True)
        marks = ", ".join("?" * len(members))
        if op == "in":
            return _Sql(f"{name} IN ({marks})", tuple(members), True)
        if nullable:
            return _Sql(f"({name} IS NULL OR {name} NOT IN ({marks}))", tuple(members), True)
        return _Sql(f"{name} NOT IN ({marks})", tuple(members), True)
    return None


# Searches for a literal text ------------------------------------------------

#: What RE2 treats as an operator unless a backslash precedes it.
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")

#: ASCII letters that RE2's case folding (Unicode's simple folding) relates
#: to characters beyond ASCII: C{k} to the Kelvin sign, C{s} to the long s.
#: (tests/test_sql_query.py checks these sets against every code point.)
_RE2_FOLD_KIN = frozenset("ks")

#: ASCII letters that appear in the casefold of a character beyond ASCII
#: (C{ß} is C{ss}, the ligature C{ﬁ} is C{fi}, ...).
_CASEFOLD_KIN = frozenset("afhijklnstwy")


def literal_of(pattern: str) -> str | None:
    """
    The text C{pattern} (an RE2 expression) finds, if it is only a literal
    text (its operators escaped with a backslash), else C{None}.
    """
    out = []
    escaped = False
    for char in pattern:
        if escaped:
            if char.isascii() and not char.isalnum() and char.isprintable():
                out.append(char)
                escaped = False
                continue
            return None  # \d, \x41, \Q...: more than a literal
        if char == "\\":
            escaped = True
        elif char in _RE2_SPECIAL:
            return None
        else:
            out.append(char)
    if escaped:
        return None
    return "".join(out)


def _like_piece(char: str, kin: frozenset[str]) -> str:
    """
    What stands for C{char} in a C{LIKE} pattern on the record's JSON text:
    the character itself where its JSON form is itself and every character
    that may match it is an ASCII letter of another case; C{%} elsewhere.
    """
    if not (" " <= char <= "~") or char in '"\\' or char.lower() in kin:
        return "%"
    if char in "%_":
        return "\\" + char
    return char.lower()


def _like_pattern(text: str, kin: frozenset[str], whole: bool = False) -> str | None:
    """
    A C{LIKE} pattern (escape C{\\}, in lower case) that the record's JSON
    text matches whenever one of its strings holds C{text} (case folded as
    C{kin} tells), or is C{text} if C{whole}; C{None} if it would keep no
    character.
    """
    pieces = ["%", '"'] if whole else ["%"]
    kept = 0
    for char in text[:MAX_LIKE_CHARACTERS]:
        piece = _like_piece(char, kin)
        if piece == "%":
            if pieces[-1] != "%":
                pieces.append(piece)
        else:
            pieces.append(piece)
            kept += 1
    if kept == 0:
        return None
    if whole and len(text) <= MAX_LIKE_CHARACTERS:
        pieces.append('"')
    if pieces[-1] != "%":
        pieces.append("%")
    return "".join(pieces)


def _search(field: str, op: str, value: object, dialect: Dialect) -> _Sql | None:
    """
    A C{LIKE} that every row matching C{[field, op, value]} passes, for a
    search for a literal text: C{~}/C{C~} with a pattern that is a literal,
    C{rin}/C{Crin} with a string.
    """
    if field in _NOT_IN_TEXT or not isinstance(value, str):
        return None
    if op in ("~", "C~"):
        text = literal_of(value)
        kin = _RE2_FOLD_KIN if op == "C~" else frozenset()
    elif op in ("rin", "Crin"):
        # Crin compares casefolded strings: the casefold of the value is what a member folds to.
        text = value.casefold() if op == "Crin" else value
        kin = _CASEFOLD_KIN if op == "Crin" else frozenset()
    else:
        return None
    if text is None:
        return None
    pattern = _like_pattern(text, kin, whole=op in ("rin", "Crin"))
    if pattern is None:
        return None
    return _Sql(dialect.like_any(1), (pattern,), False, (pattern,))


# Filters ------------------------------------------------------------------------


def _filter(spec: object, dialect: Dialect) -> _Sql | None:
    """
    The SQL of one filter (a condition or an C{OR}), or C{None} if SQL cannot even narrow it.
    """
    if not isinstance(spec, (list, tuple)):
        return None
    if len(spec) == 2 and spec[0] == "OR":
        return _any(spec[1], dialect)
    if len(spec) != 3:
        return None
    field, op, value = spec
    if not isinstance(field, str) or not isinstance(op, str):
        return None
    column = COLUMNS.get(field)
    if column is not None:
        sql = _column_condition(column, op, value)
        if sql is not None:
            return sql
    return _search(field, op, value, dialect)


def _all(filters: Sequence[Any], dialect: Dialect) -> _Sql | None:
    """
    The SQL of filters that are ANDed: what SQL checks of them (exact if
    it checks all of them exactly); C{None} if it checks none.
    """
    parts = [_filter(spec, dialect) for spec in filters]
    kept = [part for part in parts if part is not None]
    if not kept:
        return None
    exact = len(kept) == len(parts) and all(part.exact for part in kept)
    if len(kept) == 1:
        return _Sql(kept[0].text, kept[0].params, exact)
    return _Sql(
        "(" + " AND ".join(part.text for part in kept) + ")",
        tuple(p for part in kept for p in part.params),
        exact,
    )


def _any(members: object, dialect: Dialect) -> _Sql | None:
    """
    The SQL of C{["OR", members]}: only if SQL checks (or narrows) every member.
    """
    if not isinstance(members, (list, tuple)) or not members:
        return None
    parts: dict[tuple[str, tuple[object, ...]], _Sql] = {}
    patterns: dict[str, None] = {}
    exact = True
    for member in members:
        if isinstance(member, (list, tuple)) and member and isinstance(member[0], (list, tuple)):
            part = _all(member, dialect)
        else:
            part = _filter(member, dialect)
        if part is None:
            return None  # a member SQL knows nothing of may match any row
        exact = exact and part.exact
        if part.patterns:
            # A search of several fields narrows each with the same LIKE: once is enough.
            patterns.update(dict.fromkeys(part.patterns))
        else:
            parts.setdefault((part.text, part.params), part)
    if patterns:
        searched = tuple(patterns)
        if not parts:
            return _Sql(dialect.like_any(len(searched)), searched, exact, searched)
        search = _Sql(dialect.like_any(len(searched)), searched, exact)
        parts[(search.text, search.params)] = search
    if len(parts) == 1:
        [part] = parts.values()
        return _Sql(part.text, part.params, exact)
    return _Sql(
        "(" + " OR ".join(part.text for part in parts.values()) + ")",
        tuple(p for part in parts.values() for p in part.params),
        exact,
    )


def _order(order_by: Sequence[OrderBy]) -> str | None:
    if not all(o.field in _ORDER_COLUMNS or o.field in _GUARDED_ORDER_COLUMNS for o in order_by):
        return None
    terms = []
    for o in order_by:
        # filter_list puts nulls last in both directions unless told otherwise,
        # and keeps equal rows in id order (its sort is stable) even descending.
        nulls = "NULLS FIRST" if o.nulls_first else "NULLS LAST"
        terms.append(f"{COLUMNS[o.field].name} {'DESC' if o.descending else 'ASC'} {nulls}")
        if o.field == "id":
            break  # ids are unique: nothing after them matters
    else:
        terms.append("id ASC")
    return "ORDER BY " + ", ".join(terms)


def _guard(order_by: Sequence[OrderBy], dialect: Dialect) -> str | None:
    """
    The rows whose value of a sorted field its column does not hold.
    """
    terms = []
    for o in order_by:
        if o.field == "id":
            break
        keys = _GUARDED_ORDER_COLUMNS.get(o.field)
        if keys is not None:
            terms.append(f"({COLUMNS[o.field].name} IS NULL AND {dialect.present(keys)})")
    return " OR ".join(terms) if terms else None


def translate(filters: Sequence[Any] | None, options: QueryOptions, dialect: Dialect = SQLITE) -> SqlQuery:
    """
    The SQL for C{filters} (already validated) and C{options} on C{dialect}'s engine.
    """
    clauses: list[str] = []
    params: list[object] = []
    rest: list[Any] = []
    for spec in filters or ():
        sql = _filter(spec, dialect)
        if sql is None or not sql.exact:
            rest.append(spec)
        if sql is not None:
            clauses.append(sql.text)
            params.extend(sql.params)
    order = _order(options.order_by)
    return SqlQuery(
        where=("WHERE " + " AND ".join(clauses)) if clauses else "",
        params=tuple(params),
        order=order or "ORDER BY id ASC",
        ordered=order is not None,
        residual=compile_filters(rest) if rest else None,
        guard=_guard(options.order_by, dialect) if order is not None else None,
    )
