"""
Checking a call's arguments against the method's signature and type hints.

A method's parameters after C{self} (and the session and job the daemon
passes) are what callers send in C{params}.  A call with too many or too few
arguments, or one whose value does not match a simple annotation (C{int},
C{str}, C{bool}, C{float}, C{list}, C{dict}, unions of them and C{None}),
fails with :class:`~midjobs.errors.ValidationErrors` before the method runs.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable, Sequence

import attrs

from .errors import ValidationError, ValidationErrors

__all__ = ["REDACTED", "Signature", "at_path", "signature_of"]

#: What a secret argument is shown as wherever a call is recorded.
REDACTED = "********"

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
    accepted: tuple[type, ...] | None


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
        The parameters as ``core.get_methods`` shows them.
        """
        return [
            {
                "name": p.name,
                "required": p.required,
                "type": _type_name(p.accepted).split(" or ") if p.accepted else None,
            }
            for p in self.parameters
        ]


def signature_of(func: Callable[..., object], skip: int) -> Signature:
    """
    The signature of C{func} without its first C{skip} parameters.

    C{skip} counts C{self} and whatever the daemon passes before the caller's
    arguments (the session, the job).
    """
    hints = typing.get_type_hints(func)
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
        parameters.append(
            _Parameter(
                name=parameter.name,
                required=parameter.default is inspect.Parameter.empty,
                accepted=_accepted_types(hints.get(parameter.name, inspect.Parameter.empty)),
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
