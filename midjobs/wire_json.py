"""
JSON with the protocol's extended values, both directions.

A datetime travels as C{{"$date": <ms since the epoch, UTC>}}, a date as
C{{"$type": "date", "$value": "YYYY-MM-DD"}}, a time as C{{"$time": "HH:MM:SS"}}
and a set as C{{"$set": [...]}} (C{docs/protocol.rst}, "Extended values").
"""

from __future__ import annotations

import datetime
import json
from typing import Any, NoReturn

__all__ = ["dumps", "lenient_dumps", "loads", "to_wire", "from_wire"]

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MILLISECOND = datetime.timedelta(milliseconds=1)


def to_wire(value: object) -> Any:
    """
    The JSON-ready form of one non-JSON value, for C{json.dumps(default=...)}.

    @raise TypeError: C{value} has no wire form.
    """
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return {"$date": (value - _EPOCH) // _MILLISECOND}
    if isinstance(value, datetime.date):
        return {"$type": "date", "$value": value.isoformat()}
    if isinstance(value, datetime.time):
        return {"$time": value.strftime("%H:%M:%S")}
    if isinstance(value, (set, frozenset)):
        return {"$set": list(value)}
    if isinstance(value, (bytes, bytearray)):
        raise TypeError("bytes have no JSON form")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def from_wire(obj: dict[str, Any]) -> Any:
    """
    The value an extended-JSON object stands for, for C{json.loads(object_hook=...)}.
    """
    if len(obj) == 1:
        if "$date" in obj and isinstance(obj["$date"], (int, float)):
            try:
                return _EPOCH + datetime.timedelta(milliseconds=obj["$date"])
            except OverflowError:
                raise ValueError(f"$date out of range: {obj['$date']}") from None
        if "$time" in obj and isinstance(obj["$time"], str):
            return datetime.time.fromisoformat(obj["$time"])
        if "$set" in obj and isinstance(obj["$set"], list):
            try:
                return set(obj["$set"])
            except TypeError:
                return obj
    elif len(obj) == 2 and obj.get("$type") == "date" and isinstance(obj.get("$value"), str):
        return datetime.date.fromisoformat(obj["$value"])
    return obj


def dumps(value: object) -> str:
    """
    Serialise C{value} with the extended forms.
    """
    return _encoder.encode(value)


def lenient_dumps(value: object) -> str:
    """
    L{dumps}, writing C{repr()} for values that have no JSON form (for
    diagnostics and notifications, where something is better than nothing).
    """
    try:
        return dumps(value)
    except (TypeError, ValueError):

        def default(obj: object) -> Any:
            try:
                return to_wire(obj)
            except TypeError:
                return repr(obj)

        return json.dumps(value, default=default, separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    """
    Parse C{text}, turning extended forms back into Python values.

    @raise ValueError: C{text} is not JSON (C{NaN} and C{Infinity} are not),
        or an extended value is out of range.
    """
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    return _decoder.decode(text)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


_encoder = json.JSONEncoder(default=to_wire, separators=(",", ":"), allow_nan=False)
_decoder = json.JSONDecoder(object_hook=from_wire, parse_constant=_reject_constant)
