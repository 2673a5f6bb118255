"""
The query language of C{core.get_jobs} and C{user.query}: filters and options.

It is the TrueNAS middleware's C{filter_list} (C{docs/protocol.rst}, "Filters"
and "Options"), implemented here.  C{filters} is a list of C{[field, op, value]}
conditions, ANDed; C{["OR", [member, ...]]} ORs its members, each a condition
(or a nested OR) or a list of conditions that are ANDed.  Fields may be dotted
(C{progress.percent}); C{\\.} stands for a literal dot in a key and a numeric
part indexes a list.  A key that is missing anywhere on the path reads as
C{None}.

Operators: C{=} C{!=} C{>} C{>=} C{<} C{<=} C{~} (a regular expression search,
in RE2 syntax: see below) C{in} C{nin}
(the field's value is, or is not, in the given list) C{rin} C{rnin} (the given
value is, or is not, in the field's list) C{^} C{!^} (starts with, or not)
C{$} C{!$} (ends with, or not).  A C{C} prefix makes an operator compare
strings case-insensitively.  A negated operator always matches exactly the
rows its positive form does not.  Nothing raises while rows are matched: a
comparison that Python refuses (C{None > 1}, C{"a" < 1}) simply does not match.

C{~} is matched by RE2 (C{google-re2}), in time linear in the text whatever
the pattern, because a client chooses both the pattern and (through a job's
arguments) the text.  RE2 has no backreferences and no lookaround; such a
pattern, or one RE2 cannot otherwise compile (too large, say), fails
validation with C{EINVAL} naming the filter.  C{C~} ignores case.

Options: C{select}, C{order_by}, C{offset}, C{limit}, C{count}, C{get} and
C{extra} (method-specific, carried but not interpreted here).

Everything is validated before any row is looked at, so bad filters and
options fail the same way whether or not there are rows; the errors are
L{ValidationErrors} with attributes such as C{filters.0} or C{options.limit}.
"""

from __future__ import annotations

import errno
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from functools import lru_cache
from itertools import islice
from decimal import Decimal
from numbers import Real
from typing import Any

import attrs
import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from midjobs.errors import CallError, ValidationErrors

__all__ = [
    "OPERATORS",
    "OrderBy",
    "QueryOptions",
    "SelectField",
    "compile_filters",
    "compile_regex",
    "filter_list",
    "get_path",
    "validate_options",
]

#: A compiled filter: does this row match?
Predicate = Callable[[Mapping[str, Any]], bool]

#: The operators without their optional C{C} (case-insensitive) prefix.
OPERATORS = frozenset(
    ["=", "!=", ">", ">=", "<", "<=", "~", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$"]
)

NULLS_FIRST = "nulls_first:"
NULLS_LAST = "nulls_last:"

#: How deeply C{OR}s may nest inside each other.
MAX_OR_DEPTH = 16

#: What C{in}/C{nin} accept as their list, and what C{rin}/C{rnin} search.
_LISTS = (list, tuple, set, frozenset)

#: Options of the TrueNAS query methods that have no meaning here: accepted
#: (so that clients written for that daemon work) and ignored, with their types.
_IGNORED_OPTIONS: Mapping[str, tuple[type, ...]] = {
    "relationships": (bool,),
    "extend": (str, type(None)),
    "extend_context": (str, type(None)),
    "prefix": (str, type(None)),
    "force_sql_filters": (bool,),
}


def _always(item: Mapping[str, Any]) -> bool:
    return True


def _re2_options(case_sensitive: bool) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False  # a bad pattern is the client's error, told to the client
    return options


_RE2_OPTIONS = {True: _re2_options(True), False: _re2_options(False)}


def compile_regex(pattern: str, ignore_case: bool = False) -> Callable[[str], bool]:
    """
    A test of whether C{pattern}, compiled by RE2, is found in a string: in
    time linear in that string.  Texts are searched as UTF-8 (a lone
    surrogate, which JSON can carry, is searched rather than refused).

    @raise ValueError: RE2 cannot compile C{pattern} (backreferences,
        lookaround, a bad or too large pattern); the message says why.
    """
    try:
        regex = re2.compile(pattern.encode("utf-8", "surrogatepass"), _RE2_OPTIONS[not ignore_case])
    except re2.error as e:
        reason = e.args[0] if e.args else "cannot be compiled"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(str(reason)) from None
    search = regex.search

    def found(text: str) -> bool:
        return search(text.encode("utf-8", "surrogatepass")) is not None

    return found


# Paths ----------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _split_path(field: str) -> tuple[str, ...]:
    """
    The keys of a dotted field: C{"a.b"} is C{("a", "b")}, C{"a\\.b"} is C{("a.b",)}.
    """
    if "." not in field:
        return (field,)
    parts: list[str] = []
    current = ""
    rest = field
    while True:
        left, sep, rest = rest.partition(".")
        if sep and left.endswith("\\"):
            current += left[:-1] + "."
            continue
        parts.append(current + left)
        current = ""
        if not sep:
            return tuple(parts)


_MISSING = object()


def _walk(item: Any, parts: tuple[str, ...], missing: Any = None) -> Any:
    """
    Follow C{parts} from C{item}: mapping keys, or indexes into lists.

    @return: the value found, or C{missing} when some step does not exist.
    """
    current = item
    for part in parts:
        if type(current) is dict or isinstance(current, Mapping):
            current = current.get(part, _MISSING)
            if current is _MISSING:
                return missing
        elif isinstance(current, (list, tuple)) and part.isdigit():
            index = int(part)
            if index >= len(current):
                return missing
            current = current[index]
        else:
            return missing
    return current


def get_path(item: Any, dotted_field: str) -> Any:
    """
    The value of C{dotted_field} in C{item}, or C{None} when it is missing.

    C{get_path({"progress": {"percent": 5}}, "progress.percent")} is C{5}.
    A part made of digits indexes a list (C{"message_ids.0"}), and C{\\.}
    is a dot inside a key (C{"a\\.b"} reads the key C{"a.b"}).
    """
    return _walk(item, _split_path(dotted_field))


def _getter(field: str) -> Callable[[Any], Any]:
    """
    A fast reader of C{field} from a row, for use once per row.
    """
    parts = _split_path(field)
    if len(parts) == 1:
        key = parts[0]

        def get_key(item: Any) -> Any:
            try:
                return item.get(key)
            except AttributeError:
                return None

        return get_key

    def get_dotted(item: Any) -> Any:
        return _walk(item, parts)

    return get_dotted


# Filters --------------------------------------------------------------------


def _fold(value: Any) -> Any:
    """
    C{value} for a case-insensitive comparison: strings, also inside lists, casefolded.
    """
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, (list, tuple)):
        return [v.casefold() if isinstance(v, str) else v for v in value]
    if isinstance(value, (set, frozenset)):
        return {v.casefold() if isinstance(v, str) else v for v in value}
    return value


def _identity(value: Any) -> Any:
    return value


_ORDERING = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def _compile_condition(
    field: str, op: str, value: Any, attribute: str, errors: ValidationErrors
) -> Predicate | None:
    """
    The predicate of one C{[field, op, value]} condition, or C{None} after
    adding to C{errors} why it is invalid.
    """
    insensitive = op.startswith("C")
    base = op[1:] if insensitive else op
    if base not in OPERATORS:
        errors.add(attribute, f"Unknown operator {op!r}")
        return None
    fold = _fold if insensitive else _identity
    get = _getter(field)

    if base in ("=", "!="):
        target = fold(value)
        if insensitive:

            def equal(item: Mapping[str, Any]) -> bool:
                return bool(_fold(get(item)) == target)

        else:

            def equal(item: Mapping[str, Any]) -> bool:
                return bool(get(item) == target)

        return equal if base == "=" else _negate(equal)

    if base in _ORDERING:
        compare = _ORDERING[base]
        target = fold(value)

        def ordered(item: Mapping[str, Any]) -> bool:
            x = get(item)
            if x is None or target is None:
                return False
            try:
                return bool(compare(fold(x), target))
            except (TypeError, ValueError, ArithmeticError):
                return False

        return ordered

    if base == "~":
        if not isinstance(value, str):
            errors.add(attribute, f"The value of {op!r} must be a regular expression string")
            return None
        try:
            found = compile_regex(value, insensitive)
        except ValueError as e:
            errors.add(attribute, f"Invalid regular expression {value[:200]!r}: {e}")
            return None

        def matches(item: Mapping[str, Any]) -> bool:
            x = get(item)
            return isinstance(x, str) and found(x)

        return matches

    if base in ("in", "nin"):
        if not isinstance(value, _LISTS):
            errors.add(attribute, f"The value of {op!r} must be a list")
            return None
        members = list(fold(value))
        try:
            member_set: frozenset[Any] | None = frozenset(members)
        except TypeError:
            member_set = None

        def is_in(item: Mapping[str, Any]) -> bool:
            x = fold(get(item))
            if member_set is not None:
                try:
                    return x in member_set
                except TypeError:
                    pass
            return x in members

        return is_in if base == "in" else _negate(is_in)

    if base in ("rin", "rnin"):
        target = fold(value)

        def contains(item: Mapping[str, Any]) -> bool:
            x = get(item)
            if not isinstance(x, _LISTS):
                return False
            try:
                return target in fold(x)
            except TypeError:
                return False

        return contains if base == "rin" else _negate(contains)

    # ^ !^ $ !$
    if not isinstance(value, str):
        errors.add(attribute, f"The value of {op!r} must be a string")
        return None
    target = fold(value)
    method = str.startswith if base in ("^", "!^") else str.endswith

    def affix(item: Mapping[str, Any]) -> bool:
        x = get(item)
        return isinstance(x, str) and method(fold(x), target)

    return affix if base in ("^", "$") else _negate(affix)


def _negate(predicate: Predicate) -> Predicate:
    def negated(item: Mapping[str, Any]) -> bool:
        return not predicate(item)

    return negated


def _all_of(predicates: list[Predicate]) -> Predicate:
    if not predicates:
        return _always
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates

        def both(item: Mapping[str, Any]) -> bool:
            return first(item) and second(item)

        return both

    def every(item: Mapping[str, Any]) -> bool:
        for predicate in predicates:
            if not predicate(item):
                return False
        return True

    return every


def _any_of(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]

    def some(item: Mapping[str, Any]) -> bool:
        for predicate in predicates:
            if predicate(item):
                return True
        return False

    return some


def _compile_filter(
    spec: Any, attribute: str, errors: ValidationErrors, depth: int
) -> Predicate | None:
    """
    The predicate of one element of a filter list: a condition or an C{OR}.
    """
    if not isinstance(spec, (list, tuple)):
        errors.add(attribute, 'A filter must be a list: [field, operator, value] or ["OR", [...]]')
        return None
    if len(spec) == 2:
        if spec[0] != "OR":
            errors.add(attribute, 'A filter of two elements must be ["OR", [filter, ...]]')
            return None
        return _compile_or(spec[1], attribute, errors, depth)
    if len(spec) != 3:
        errors.add(attribute, 'A filter must be [field, operator, value] or ["OR", [...]]')
        return None
    field, op, value = spec
    if not isinstance(field, str) or not field:
        errors.add(attribute, "The field of a filter must be a non-empty string")
        return None
    if not isinstance(op, str):
        errors.add(attribute, "The operator of a filter must be a string")
        return None
    return _compile_condition(field, op, value, attribute, errors)


def _compile_or(
    members: Any, attribute: str, errors: ValidationErrors, depth: int
) -> Predicate | None:
    if not isinstance(members, (list, tuple)):
        errors.add(attribute, "OR takes a list of filters")
        return None
    if not members:
        errors.add(attribute, "OR takes at least one filter")
        return None
    if isinstance(members[0], str):
        errors.add(attribute, 'OR takes a list of filters: ["OR", [filter, ...]]')
        return None
    if depth >= MAX_OR_DEPTH:
        errors.add(attribute, f"OR filters nest more than {MAX_OR_DEPTH} deep")
        return None
    before = len(errors)
    branches: list[Predicate] = []
    for i, member in enumerate(members):
        member_attribute = f"{attribute}.1.{i}"
        if isinstance(member, (list, tuple)) and member and isinstance(member[0], (list, tuple)):
            # A list of filters that must all match.
            branch = _compile_list(member, member_attribute, errors, depth + 1)
        else:
            branch = _compile_filter(member, member_attribute, errors, depth + 1)
        if branch is not None:
            branches.append(branch)
    if len(errors) != before:
        return None
    return _any_of(branches)


def _compile_list(
    filters: Any, attribute: str, errors: ValidationErrors, depth: int = 0
) -> Predicate | None:
    """
    The predicate of a list of filters that are ANDed; C{None} if any is invalid.
    """
    if filters is None:
        return _always
    if not isinstance(filters, (list, tuple)):
        errors.add(attribute, "Filters must be a list")
        return None
    if filters and isinstance(filters[0], str):
        errors.add(attribute, "Filters must be a list of filters, like [[field, operator, value]]")
        return None
    before = len(errors)
    predicates: list[Predicate] = []
    for i, spec in enumerate(filters):
        predicate = _compile_filter(spec, f"{attribute}.{i}", errors, depth)
        if predicate is not None:
            predicates.append(predicate)
    if len(errors) != before:
        return None
    return _all_of(predicates)


def compile_filters(filters: Sequence[Any] | None) -> Predicate:
    """
    Validate C{filters} and turn them into one function that tells whether a
    row matches.  Compile once and call it for every row.

    @param filters: a list of C{[field, op, value]} and C{["OR", [...]]}, or
        C{None} (everything matches).
    @raise ValidationErrors: the filters are malformed; attributes name the
        culprit by its index path (C{filters.0}, C{filters.2.1.0}, ...).
    """
    errors = ValidationErrors()
    predicate = _compile_list(filters, "filters", errors)
    errors.check()
    assert predicate is not None
    return predicate


# Options --------------------------------------------------------------------


@attrs.frozen
class SelectField:
    """
    One entry of C{select}: the (dotted) C{field} to copy and the key to copy
    it to.  Without an C{alias}, a dotted field is rebuilt as nested dicts.
    """

    field: str
    alias: str | None = None
    parts: tuple[str, ...] = attrs.field(eq=False, repr=False, init=False)

    @parts.default
    def _parts(self) -> tuple[str, ...]:
        return _split_path(self.field)


@attrs.frozen
class OrderBy:
    """
    One entry of C{order_by}: sort on C{field}, C{descending} or not, with
    C{None} values before (C{nulls_first}) or after all others.
    """

    field: str
    descending: bool = False
    nulls_first: bool = False

    @classmethod
    def parse(cls, text: str) -> OrderBy:
        """
        Read C{"[nulls_first:|nulls_last:][-]field"}.

        @raise ValueError: no field is left once the prefixes are removed.
        """
        nulls_first = False
        if text.startswith(NULLS_FIRST):
            nulls_first = True
            text = text[len(NULLS_FIRST):]
        elif text.startswith(NULLS_LAST):
            text = text[len(NULLS_LAST):]
        descending = text.startswith("-")
        if descending:
            text = text[1:]
        if not text:
            raise ValueError("no field to order by")
        return cls(text, descending, nulls_first)


@attrs.frozen
class QueryOptions:
    """
    Validated, normalised query options.

    @ivar limit: at most this many rows; C{0} means no limit.
    @ivar extra: method-specific options, not interpreted here.
    """

    select: tuple[SelectField, ...] = ()
    order_by: tuple[OrderBy, ...] = ()
    offset: int = 0
    limit: int = 0
    count: bool = False
    get: bool = False
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


_OPTION_KEYS = frozenset(["select", "order_by", "offset", "limit", "count", "get", "extra"])


#: The largest offset or limit: JSON's largest exact integer (so that an
#: offset and a limit added up still fit a SQL integer).
MAX_COUNT = 2**53


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def _validate_options(options: Any, errors: ValidationErrors) -> QueryOptions:
    """
    Normalise C{options}, adding every problem to C{errors}.
    """
    if options is None:
        return QueryOptions()
    if isinstance(options, QueryOptions):
        return options
    if not isinstance(options, Mapping):
        errors.add("options", "Options must be an object")
        return QueryOptions()

    values: dict[str, Any] = {}
    for key, value in options.items():
        attribute = f"options.{key}"
        if value is None and (key in _OPTION_KEYS or key in _IGNORED_OPTIONS):
            continue  # null means "the default"
        if key == "select":
            values["select"] = _validate_select(value, attribute, errors)
        elif key == "order_by":
            values["order_by"] = _validate_order_by(value, attribute, errors)
        elif key in ("offset", "limit"):
            if _is_count(value):
                values[key] = value
            else:
                errors.add(attribute, f"Must be an integer from 0 to {MAX_COUNT}")
        elif key in ("count", "get"):
            if isinstance(value, bool):
                values[key] = value
            else:
                errors.add(attribute, "Must be a boolean")
        elif key == "extra":
            if isinstance(value, Mapping):
                values["extra"] = value
            else:
                errors.add(attribute, "Must be an object")
        elif key in _IGNORED_OPTIONS:
            if not isinstance(value, _IGNORED_OPTIONS[key]):
                errors.add(attribute, "Wrong type")
        else:
            errors.add(attribute, f"Unknown option {key!r}")
    return QueryOptions(**values)


def _validate_select(value: Any, attribute: str, errors: ValidationErrors) -> tuple[SelectField, ...]:
    if not isinstance(value, (list, tuple)):
        errors.add(attribute, "Must be a list of fields")
        return ()
    fields: list[SelectField] = []
    for i, entry in enumerate(value):
        if isinstance(entry, str) and entry:
            fields.append(SelectField(entry))
        elif (
            isinstance(entry, (list, tuple))
            and len(entry) == 2
            and all(isinstance(e, str) and e for e in entry)
        ):
            fields.append(SelectField(entry[0], entry[1]))
        else:
            errors.add(f"{attribute}.{i}", "Must be a field name or a [field, alias] pair")
    return tuple(fields)


def _validate_order_by(value: Any, attribute: str, errors: ValidationErrors) -> tuple[OrderBy, ...]:
    if not isinstance(value, (list, tuple)):
        errors.add(attribute, "Must be a list of fields")
        return ()
    orders: list[OrderBy] = []
    for i, entry in enumerate(value):
        if not isinstance(entry, str):
            errors.add(f"{attribute}.{i}", "Must be a string")
            continue
        try:
            orders.append(OrderBy.parse(entry))
        except ValueError:
            errors.add(f"{attribute}.{i}", f"No field to order by in {entry!r}")
    return tuple(orders)


def validate_options(options: Mapping[str, Any] | QueryOptions | None) -> QueryOptions:
    """
    Validate and normalise query C{options}; C{None} gives the defaults.

    A C{null} value for a key means its default.  The TrueNAS options that
    mean nothing here (C{relationships}, C{extend}, C{extend_context},
    C{prefix}, C{force_sql_filters}) are accepted and ignored.

    @raise ValidationErrors: unknown keys or values of the wrong type
        (attributes C{options.<key>}, C{options.select.<i>}, ...).
    """
    errors = ValidationErrors()
    result = _validate_options(options, errors)
    errors.check()
    return result


# Ordering and projection ---------------------------------------------------


def _kind(value: Any) -> tuple[int, str]:
    """
    The group a value sorts in when values of several types are mixed.
    """
    if isinstance(value, (Real, Decimal)):
        return (0, "")
    if isinstance(value, str):
        return (1, "")
    return (2, f"{type(value).__module__}.{type(value).__qualname__}")


def _first(pair: tuple[Any, Any]) -> Any:
    return pair[0]


def _repr_first(pair: tuple[Any, Any]) -> str:
    return repr(pair[0])


def _sort_pairs(pairs: list[tuple[Any, Any]], descending: bool) -> list[tuple[Any, Any]]:
    """
    Sort C{(value, row)} pairs by value, stably, without ever raising.

    Values that Python cannot compare are grouped by type (numbers, then
    strings, then other types by name), and within a group that still cannot
    be compared, by C{repr}.
    """
    try:
        return sorted(pairs, key=_first, reverse=descending)
    except (TypeError, ValueError, ArithmeticError):
        pass
    groups: dict[tuple[int, str], list[tuple[Any, Any]]] = {}
    for pair in pairs:
        groups.setdefault(_kind(pair[0]), []).append(pair)
    result: list[tuple[Any, Any]] = []
    for kind in sorted(groups, reverse=descending):
        group = groups[kind]
        try:
            result.extend(sorted(group, key=_first, reverse=descending))
        except (TypeError, ValueError, ArithmeticError):
            result.extend(sorted(group, key=_repr_first, reverse=descending))
    return result


def _order(rows: list[Any], order_by: Sequence[OrderBy]) -> list[Any]:
    """
    C{rows} sorted by each key of C{order_by}, the first one most significant.
    """
    for order in reversed(order_by):
        get = _getter(order.field)
        nulls: list[Any] = []
        pairs: list[tuple[Any, Any]] = []
        for row in rows:
            value = get(row)
            if value is None:
                nulls.append(row)
            else:
                pairs.append((value, row))
        ordered = [row for _, row in _sort_pairs(pairs, order.descending)]
        rows = nulls + ordered if order.nulls_first else ordered + nulls
    return rows


def _project(row: Mapping[str, Any], select: Sequence[SelectField]) -> dict[str, Any]:
    """
    A new dict with the C{select}ed fields of C{row}.

    A field missing from the row is left out.  A dotted field whose parent is
    C{None} gives that parent as C{None}.  Nested dicts this builds or extends
    are new; values copied as they are remain shared with C{row}.
    """
    out: dict[str, Any] = {}
    own: set[int] = {id(out)}  # the dicts built here, which may be written to
    for selected in select:
        parts = selected.parts
        if selected.alias is None and len(parts) == 1:
            value = row.get(parts[0], _MISSING)
            if value is not _MISSING:
                out[parts[0]] = value
            continue
        if selected.alias is not None:
            value = _walk(row, parts, _MISSING)
            if value is not _MISSING:
                out[selected.alias] = value
            continue
        # Find how far the path exists in the row.
        current: Any = row
        depth = 0
        for part in parts:
            if not (type(current) is dict or isinstance(current, Mapping)) or part not in current:
                break
            current = current[part]
            depth += 1
        if depth < len(parts):
            if current is None and depth > 0:
                parts = parts[:depth]  # the parent is null: report it as such
            else:
                continue
        target = out
        for part in parts[:-1]:
            child = target.get(part)
            if not (type(child) is dict and id(child) in own):
                child = dict(child) if isinstance(child, Mapping) else {}
                own.add(id(child))
                target[part] = child
            target = child
        if len(parts) < len(selected.parts):
            target.setdefault(parts[-1], None)
        else:
            target[parts[-1]] = current
    return out


def _projector(select: Sequence[SelectField]) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """
    L{_project} for C{select}, with a fast path for plain top-level fields.
    """
    if all(s.alias is None and len(s.parts) == 1 for s in select):
        keys = [s.parts[0] for s in select]

        def project_keys(row: Mapping[str, Any]) -> dict[str, Any]:
            out = {}
            for key in keys:
                value = row.get(key, _MISSING)
                if value is not _MISSING:
                    out[key] = value
            return out

        return project_keys

    def project(row: Mapping[str, Any]) -> dict[str, Any]:
        return _project(row, select)

    return project


# The entry point ---------------------------------------------------------------


def filter_list(
    items: Iterable[Mapping[str, Any]],
    filters: Sequence[Any] | None = None,
    options: Mapping[str, Any] | QueryOptions | None = None,
) -> list[Any] | dict[str, Any] | int:
    """
    Query C{items} as C{core.get_jobs} does.

    Rows that match C{filters} are counted (C{count}: an C{int}, whatever
    C{offset} and C{limit} say), or sorted by C{order_by}, cut to
    C{offset}/C{limit} (C{0}: no limit), and projected by C{select}.  With
    C{get}, the first such row is returned instead of a list.

    C{items} are never modified.  Rows are returned as they are unless
    C{select} is given, in which case each is a new dict.

    @raise ValidationErrors: C{filters} or C{options} are invalid (checked even
        when C{items} is empty).
    @raise CallError: C{get} found no row (errno C{ENOENT}).
    """
    errors = ValidationErrors()
    predicate = _compile_list(filters, "filters", errors)
    opts = _validate_options(options, errors)
    errors.check()
    assert predicate is not None

    matches: Iterable[Any] = items if predicate is _always else filter(predicate, items)

    if opts.count:
        if predicate is _always and isinstance(items, Sized):
            return len(items)
        return sum(1 for _ in matches)

    if opts.get and not opts.order_by:
        # The first match after the offset: no need to look further.
        for row in islice(matches, opts.offset, None):
            return _project(row, opts.select) if opts.select else row
        raise CallError("Object not found", errno.ENOENT)

    rows = list(matches)
    if opts.order_by:
        rows = _order(rows, opts.order_by)
    if opts.offset or opts.limit:
        end = opts.offset + opts.limit if opts.limit else None
        rows = rows[opts.offset:end]

    if opts.get:
        if not rows:
            raise CallError("Object not found", errno.ENOENT)
        return _project(rows[0], opts.select) if opts.select else rows[0]

    if opts.select:
        return list(map(_projector(opts.select), rows))
    return rows
