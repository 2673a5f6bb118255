"""
Checking a call's arguments against the method's signature and type hints.

A method's parameters after C{self} (and the session and job the daemon
passes) are what callers send in C{params}.  A call with too many or too few
arguments, or one whose value does not match a simple annotation (C{int},
C{str}, C{bool}, C{float}, C{list}, C{dict}, unions of them and C{None}),
fails with :class:`~midjobs.errors.ValidationErrors` before the method runs.

C{core.get_methods} describes each parameter from the same signature
(L{Signature.to_wire}): the JSON types it accepts, the values of a
C{Literal}, a list's items, a C{TypedDict}'s members, the default, and the
text of the docstring's C{@param} field.
"""

from __future__ import annotations

import collections.abc
import copy
import inspect
import json
import re
import types
import typing
from typing import Any, Callable, Mapping, Sequence

import attrs

from . import wire_json
from .errors import ValidationError, ValidationErrors

__all__ = ["MAX_CALL_SIZE", "REDACTED", "Signature", "at_path", "signature_of"]

#: What a secret argument is shown as wherever a call is recorded.
REDACTED = "********"

#: The largest call a logged-in client sends, its method and arguments as
#: JSON: a WebSocket message, an upload's C{data} part.  A finished job the
#: daemon keeps holds its arguments (C{docs/limits.rst}).
MAX_CALL_SIZE = 64 * 1024

_SIMPLE_TYPES: dict[object, tuple[type, ...]] = {
    int: (int,),
    float: (int, float),
    str: (str,),
    bool: (bool,),
    list: (list,),
    dict: (dict,),
    type(None): (type(None),),
}


def _accepted_types(annotation: object) -> tuple[type, ...] | None:
    """
    The Python types a JSON value may have for C{annotation}; C{None} for "any".
    """
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        accepted: tuple[type, ...] = ()
        for member in typing.get_args(annotation):
            member_types = _accepted_types(member)
            if member_types is None:
                return None
            accepted += member_types
        return accepted
    if origin is not None:
        annotation = origin
    return _SIMPLE_TYPES.get(annotation)


def _type_list(accepted: tuple[type, ...] | None) -> list[str] | None:
    """
    C{accepted} as the list of JSON type names of the wire; C{None} for "any".
    """
    return _type_name(accepted).split(" or ") if accepted else None


#: The origins of the annotations whose values are JSON arrays of one kind of item.
_SEQUENCES = (list, collections.abc.Sequence, collections.abc.MutableSequence)

#: The JSON type of each kind of value a C{Literal} may hold on the wire.
_LITERAL_TYPES: dict[type, str] = {bool: "boolean", int: "integer", str: "string", type(None): "null"}


def _describe(annotation: object, within: frozenset[object] = frozenset()) -> dict[str, Any]:
    """
    How C{core.get_methods} describes a value of type C{annotation}.

    The description has C{type}, the JSON type names a value may have (a
    list, or C{None} for any value), and where the annotation says more:
    C{enum}, the values of a C{Literal} (with C{None} when it is optional);
    C{items}, the description of a list's items; C{properties}, the
    description of each member of a C{TypedDict}, and C{required}, the names
    of the members a value must have.

    C{within} holds the C{TypedDict}s being described around this value: one
    that holds itself is described inside as an object, without its members.
    """
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _describe_union([_describe(member, within) for member in arguments])
    if origin is typing.Literal:
        names = [_LITERAL_TYPES.get(type(value)) for value in arguments]
        if None in names:
            # An enum member or bytes: no plain JSON value stands for it.
            return {"type": None}
        return {"type": list(dict.fromkeys(names)), "enum": list(arguments)}
    if origin in _SEQUENCES:
        description: dict[str, Any] = {"type": ["array"]}
        items = _describe(arguments[0], within) if arguments else {"type": None}
        if items != {"type": None}:
            description["items"] = items
        return description
    if typing.is_typeddict(annotation):
        try:
            hints = typing.get_type_hints(annotation)
        except NameError:
            # A member's type is only imported for the type checker.
            hints = None
        if hints is None or annotation in within:
            return {"type": ["object"]}
        return {
            "type": ["object"],
            "properties": {name: _describe(hint, within | {annotation}) for name, hint in hints.items()},
            "required": _required_members(annotation),
        }
    return {"type": _type_list(_accepted_types(annotation))}


def _required_members(typed_dict: Any) -> list[str]:
    """
    The names of the members a value of C{typed_dict} must have.

    C{__required_keys__} misses C{NotRequired[...]} written as a string (as
    under C{from __future__ import annotations}): the hints say it.
    """
    required = []
    for name, hint in typing.get_type_hints(typed_dict, include_extras=True).items():
        marker = typing.get_origin(hint)
        if marker is typing.Required or (marker is not typing.NotRequired and name in typed_dict.__required_keys__):
            required.append(name)
    return required


def _describe_union(members: list[dict[str, Any]]) -> dict[str, Any]:
    """
    The description of a value that may be any of C{members}'.
    """
    if any(member["type"] is None for member in members):
        return {"type": None}
    names: list[str] = list(dict.fromkeys(name for member in members for name in member["type"]))
    description: dict[str, Any] = {"type": names}
    valued = [member for member in members if member["type"] != ["null"]]
    if all("enum" in member for member in valued):
        description["enum"] = [value for member in valued for value in member["enum"]]
        if "null" in names:
            description["enum"].append(None)
    # A list's items (an object's members) are known when only one member is a list (an object).
    arrays = [member for member in members if "array" in member["type"]]
    if len(arrays) == 1 and "items" in arrays[0]:
        description["items"] = arrays[0]["items"]
    objects = [member for member in members if "object" in member["type"]]
    if len(objects) == 1 and "properties" in objects[0]:
        description["properties"] = objects[0]["properties"]
        description["required"] = objects[0]["required"]
    return description


def _wire_default(value: object) -> dict[str, Any]:
    """
    C{{"default": value}} in its JSON form, or nothing when the wire cannot carry C{value}.
    """
    try:
        return {"default": json.loads(wire_json.dumps(value))}
    except (TypeError, ValueError):
        return {}


#: The start of a parameter's field in a docstring: epytext's C{@param name:}
#: or reStructuredText's C{:param name:} (C{:param str name:} too).
_PARAM_FIELD = re.compile(r"^(\s*)[@:](?:param|parameter|arg|argument)\s+([^:]*?)\s*:(.*)$")
#: The start of epytext's inline markup: C{C{...}}, C{L{...}}, C{B{...}}...
_EPYTEXT_MARKUP = re.compile(r"(?<!\w)([BCEILMUX])\{")
#: Inline markup of reStructuredText and Markdown: ``code``, `code`, :role:`x`, **strong**.
_REST_MARKUP = re.compile(r"``(.+?)``|(?::[\w.-]+:)?`([^`]+)`|\*\*(\S(?:.*?\S)?)\*\*")


def _parameter_docs(doc: str | None) -> dict[str, str]:
    """
    The text of each C{@param name:} (or C{:param name:}) field of C{doc},
    by name: plain text, its markup taken away and its white space folded.

    A field goes on over the lines indented deeper than its own first line.
    """
    lines = (doc or "").splitlines()
    texts: dict[str, str] = {}
    index = 0
    while index < len(lines):
        field = _PARAM_FIELD.match(lines[index])
        index += 1
        if field is None or not field.group(2).split():
            continue
        indent, name, text = len(field.group(1)), field.group(2).split()[-1], [field.group(3)]
        while index < len(lines):
            line = lines[index]
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            text.append(line)
            index += 1
        plain = " ".join(_plain(" ".join(text)).split())
        if plain:
            texts[name] = plain
    return texts


def _plain(text: str) -> str:
    """
    C{text} without its inline markup: the text inside it stays.
    """
    out = []
    position = 0
    while (markup := _EPYTEXT_MARKUP.search(text, position)) is not None:
        end = _closing_brace(text, markup.end())
        out.append(text[position : markup.start()])
        if end == -1:
            # Never closed: no markup, its characters are text.
            out.append(markup.group(0))
            position = markup.end()
            continue
        tag, inner = markup.group(1), text[markup.end() : end - 1]
        if tag == "E":
            out.append({"lb": "{", "rb": "}"}.get(inner, inner))
        elif tag == "L":
            # L{text <target>} reads as its text.
            out.append(_plain(re.sub(r"\s*<[^<>]*>$", "", inner)))
        else:
            out.append(_plain(inner))
        position = end
    out.append(text[position:])
    return _REST_MARKUP.sub(lambda match: next(group for group in match.groups() if group is not None), "".join(out))


def _closing_brace(text: str, start: int) -> int:
    """
    The index just past the brace that closes the one before C{start}, or -1.
    """
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return -1


def _fits(value: object, accepted: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        # A JSON boolean is no number, although Python's bool is an int.
        return bool in accepted
    return isinstance(value, accepted)


def _type_name(accepted: tuple[type, ...]) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "boolean",
             list: "array", dict: "object", type(None): "null"}
    return " or ".join(dict.fromkeys(names[t] for t in accepted))


@attrs.frozen
class _Parameter:
    name: str
    required: bool
    #: The types L{Signature.check} lets through; C{None} for any.
    accepted: tuple[type, ...] | None
    #: The value as C{core.get_methods} describes it (L{_describe}), with its
    #: C{default} and C{description} when known; JSON-ready, never changed.
    schema: Mapping[str, Any] = attrs.field(hash=False)


@attrs.frozen
class Signature:
    """
    The caller-visible parameters of a method.
    """

    parameters: tuple[_Parameter, ...]
    variadic: bool
    #: How many of the parameters a call must give.
    required: int = attrs.field(init=False)

    @required.default
    def _required(self) -> int:
        return sum(p.required for p in self.parameters)

    def check(self, params: Sequence[object], prefix: str = "") -> None:
        """
        Raise L{ValidationErrors} unless C{params} fit the parameters.
        """
        required = self.required
        if len(params) < required or (not self.variadic and len(params) > len(self.parameters)):
            most = "any number of" if self.variadic else str(len(self.parameters))
            expected = str(required) if required == len(self.parameters) and not self.variadic else f"{required} to {most}"
            raise ValidationErrors([ValidationError(prefix or "params", f"Expected {expected} arguments, got {len(params)}")])
        wrong = [
            ValidationError(f"{prefix}{parameter.name}", f"Not a valid {_type_name(parameter.accepted)}")
            for parameter, value in zip(self.parameters, params)
            if parameter.accepted is not None and not _fits(value, parameter.accepted)
        ]
        if wrong:
            raise ValidationErrors(wrong)

    def at_path(self, params: Sequence[Any], path: str, change: Callable[[Any], Any]) -> list[Any]:
        """
        A copy of C{params} whose values at C{path} are replaced by
        C{change(value)}; C{params} itself is left as it is.

        A path is a parameter's name, then keys (or list indexes) into its
        value; C{*} stands for every item.  Parts of a path the call does not
        have are skipped.
        """
        name, *keys = path.split(".")
        copy = list(params)
        for index, parameter in enumerate(self.parameters[: len(copy)]):
            if parameter.name == name:
                copy[index] = at_path(copy[index], keys, change)
        return copy

    def to_wire(self) -> list[dict[str, Any]]:
        """
        The parameters as C{core.get_methods} shows them: each one's
        C{name}, whether a call must give it (C{required}), the JSON types
        L{check} lets through (C{type}, C{None} for any) and the description
        of its value (C{schema}, see L{_describe}).
        """
        return [
            {
                "name": p.name,
                "required": p.required,
                "type": _type_list(p.accepted),
                "schema": copy.deepcopy(dict(p.schema)),
            }
            for p in self.parameters
        ]


def signature_of(func: Callable[..., object], skip: int) -> Signature:
    """
    The signature of C{func} without its first C{skip} parameters.

    C{skip} counts C{self} and whatever the daemon passes before the caller's
    arguments (the session, the job).  A parameter's description is the text
    of its C{@param} field in C{func}'s docstring.
    """
    hints = typing.get_type_hints(func)
    docs = _parameter_docs(inspect.getdoc(func))
    parameters = []
    variadic = False
    for parameter in list(inspect.signature(func).parameters.values())[skip:]:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            variadic = True
            continue
        if parameter.kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            continue
        annotation = hints.get(parameter.name, inspect.Parameter.empty)
        required = parameter.default is inspect.Parameter.empty
        schema = _describe(annotation)
        if not required:
            schema.update(_wire_default(parameter.default))
        if parameter.name in docs:
            schema["description"] = docs[parameter.name]
        parameters.append(
            _Parameter(
                name=parameter.name,
                required=required,
                accepted=_accepted_types(annotation),
                schema=schema,
            )
        )
    return Signature(tuple(parameters), variadic)


def at_path(value: Any, keys: Sequence[str], change: Callable[[Any], Any]) -> Any:
    """
    A copy of C{value} with C{change} applied at C{keys} (see L{Signature.at_path}).
    """
    if not keys:
        return change(value)
    key, rest = keys[0], keys[1:]
    if isinstance(value, dict):
        if key == "*":
            return {k: at_path(v, rest, change) for k, v in value.items()}
        if key in value:
            return {**value, key: at_path(value[key], rest, change)}
    elif isinstance(value, list):
        if key == "*":
            return [at_path(item, rest, change) for item in value]
        if key.isdigit() and int(key) < len(value):
            index = int(key)
            return [*value[:index], at_path(value[index], rest, change), *value[index + 1 :]]
    return value
