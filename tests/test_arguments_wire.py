"""
How C{core.get_methods} describes a method's parameters (C{accepts}), from
its signature and docstring: in memory with L{signature_of}, and over the
WebSocket with the methods of C{signature_services.py}.
"""

from __future__ import annotations

import datetime
import enum
import json
from pathlib import Path
from typing import Any, Literal, NotRequired, Optional, Required, Sequence, TypedDict

import pytest
import pytest_twisted

from midjobs.arguments import signature_of
from midjobs.client import Client
from midjobs.config import Settings
from midjobs.errors import ValidationErrors

from conftest import SAMPLE_SERVICES


def wire(func: Any, skip: int = 0) -> list[dict[str, Any]]:
    """
    The C{accepts} of C{func}'s parameters after the first C{skip}, through
    JSON as the wire carries it.
    """
    carried: list[dict[str, Any]] = json.loads(json.dumps(signature_of(func, skip).to_wire()))
    return carried


def schemas(func: Any, skip: int = 0) -> dict[str, dict[str, Any]]:
    """
    The C{schema} of each parameter of C{func} after the first C{skip}, by name.
    """
    return {p["name"]: p["schema"] for p in wire(func, skip)}


# Defaults


class Colour(enum.Enum):
    RED = "red"


def test_a_default_the_wire_can_carry_is_shown() -> None:
    def f(
        a: int,
        b: int = 3,
        c: str | None = None,
        d: bool = False,
        e: list[int] = [1, 2],  # noqa: B006
        f: tuple[str, ...] = ("x",),
        g: dict[str, Any] = {"k": [1.5]},  # noqa: B006
        h: datetime.datetime = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
    ) -> None:
        pass

    described = schemas(f)
    assert "default" not in described["a"]
    assert [described[name]["default"] for name in "bcdefg"] == [3, None, False, [1, 2], ["x"], {"k": [1.5]}]
    # In the protocol's extended form.
    assert described["h"]["default"] == {"$date": 1577836800000}


def test_a_default_the_wire_cannot_carry_is_left_out() -> None:
    def f(a: object = object(), b: bytes = b"x", c: float = float("nan"), d: Colour = Colour.RED) -> None:
        pass

    for name, schema in schemas(f).items():
        assert "default" not in schema, name
    # Still optional: a call may leave them out.
    assert [p["required"] for p in wire(f)] == [False] * 4


def test_the_default_shown_is_a_copy() -> None:
    def f(a: list[int] = [1]) -> None:  # noqa: B006
        pass

    signature = signature_of(f, 0)
    signature.to_wire()[0]["schema"]["default"].append(2)
    assert signature.to_wire()[0]["schema"]["default"] == [1]
    assert f.__defaults__ == ([1],)


# Literal


def test_a_literal_is_an_enum() -> None:
    def f(a: Literal["low", "high"], b: Literal[1, 2, 3], c: Literal[True, "auto"]) -> None:
        pass

    assert schemas(f) == {
        "a": {"type": ["string"], "enum": ["low", "high"]},
        "b": {"type": ["integer"], "enum": [1, 2, 3]},
        "c": {"type": ["boolean", "string"], "enum": [True, "auto"]},
    }


def test_an_optional_literal_is_a_nullable_enum() -> None:
    def f(a: Optional[Literal["x", "y"]], b: Literal["x"] | Literal["y"] | None = None) -> None:
        pass

    described = schemas(f)
    assert described["a"] == {"type": ["string", "null"], "enum": ["x", "y", None]}
    assert described["b"] == {"type": ["string", "null"], "enum": ["x", "y", None], "default": None}


def test_a_literal_of_values_without_a_json_form_is_any_value() -> None:
    def f(a: Literal[Colour.RED], b: Literal[b"x"]) -> None:
        pass

    assert schemas(f) == {"a": {"type": None}, "b": {"type": None}}


def test_a_union_with_other_types_has_no_enum() -> None:
    def f(a: Literal["auto"] | int) -> None:
        pass

    assert schemas(f) == {"a": {"type": ["string", "integer"]}}


# Lists


def test_a_list_describes_its_items() -> None:
    def f(
        a: list[str],
        b: Sequence[int],
        c: list[list[Literal["a", "b"]]],
        d: list[Any],
        e: list,  # type: ignore[type-arg]  # a bare list, on purpose
        f: list[int] | None,
    ) -> None:
        pass

    assert schemas(f) == {
        "a": {"type": ["array"], "items": {"type": ["string"]}},
        "b": {"type": ["array"], "items": {"type": ["integer"]}},
        "c": {"type": ["array"], "items": {"type": ["array"], "items": {"type": ["string"], "enum": ["a", "b"]}}},
        # Items that may be anything are not described.
        "d": {"type": ["array"]},
        "e": {"type": ["array"]},
        "f": {"type": ["array", "null"], "items": {"type": ["integer"]}},
    }


# TypedDict


class Port(TypedDict):
    number: int
    protocol: Literal["tcp", "udp"]


class Target(TypedDict):
    host: str
    # NotRequired written as a string (this module's annotations are): __required_keys__ misses it.
    port: NotRequired[Port]
    aliases: NotRequired[list[str]]


class Loose(TypedDict, total=False):
    name: Required[str]
    note: str


class Tree(TypedDict):
    label: str
    children: list[Tree]


def test_a_typed_dict_describes_its_members() -> None:
    def f(target: Target, loose: Loose | None = None) -> None:
        pass

    assert schemas(f) == {
        "target": {
            "type": ["object"],
            "properties": {
                "host": {"type": ["string"]},
                "port": {
                    "type": ["object"],
                    "properties": {
                        "number": {"type": ["integer"]},
                        "protocol": {"type": ["string"], "enum": ["tcp", "udp"]},
                    },
                    "required": ["number", "protocol"],
                },
                "aliases": {"type": ["array"], "items": {"type": ["string"]}},
            },
            "required": ["host"],
        },
        "loose": {
            "type": ["object", "null"],
            "properties": {"name": {"type": ["string"]}, "note": {"type": ["string"]}},
            "required": ["name"],
            "default": None,
        },
    }


def test_a_typed_dict_that_holds_itself_is_described_once() -> None:
    def f(tree: Tree) -> None:
        pass

    assert schemas(f)["tree"] == {
        "type": ["object"],
        "properties": {
            "label": {"type": ["string"]},
            "children": {"type": ["array"], "items": {"type": ["object"]}},
        },
        "required": ["label", "children"],
    }


# Descriptions


def test_a_parameter_is_described_by_its_param_field() -> None:
    def f(self: Any, job: Any, path: str, mode: int, size: int = 0, other: int = 1) -> None:
        """
        Do it.

        @param job: not a caller's parameter.
        @param path: where it goes,
            as C{/a/b} (see L{the docs <midjobs.arguments>}),   with
            B{I{several}} spaces.

            And a second paragraph.
        @param mode: C{E{lb}unbalanced
        :param int size: ``bytes`` to `keep`, **at most**; :data:`x`.
        @return: nothing; C{other} has no field.
        """

    # As a job's method: self and the job are not the caller's.
    described = schemas(f, 2)
    assert described["path"]["description"] == (
        "where it goes, as /a/b (see the docs), with several spaces. And a second paragraph."
    )
    assert described["mode"]["description"] == "C{{unbalanced"
    assert described["size"]["description"] == "bytes to keep, at most; x."
    assert "description" not in described["other"]
    assert list(described) == ["path", "mode", "size", "other"]


def test_a_docstring_without_fields_describes_nothing() -> None:
    def f(a: int, b: str = "") -> None:
        """
        Add C{a} to b: here is no field.
        """

    assert schemas(f) == {"a": {"type": ["integer"]}, "b": {"type": ["string"], "default": ""}}


# The keys clients had before, and the check


def test_the_keys_clients_had_are_unchanged() -> None:
    def f(a: int, b: float | None = None, c: Any = None, d: Literal["x"] = "x", e: Target | None = None) -> None:
        pass

    # type stays the JSON types the check lets through (None: it checks none).
    assert [{k: p[k] for k in ("name", "required", "type")} for p in wire(f)] == [
        {"name": "a", "required": True, "type": ["integer"]},
        {"name": "b", "required": False, "type": ["integer", "number", "null"]},
        {"name": "c", "required": False, "type": None},
        {"name": "d", "required": False, "type": None},
        {"name": "e", "required": False, "type": None},
    ]
    assert [sorted(p) for p in wire(f)] == [["name", "required", "schema", "type"]] * 5


def test_a_method_with_star_args_is_variadic() -> None:
    def f(first: int, *rest: str, flag: bool = False) -> None:
        pass

    signature = signature_of(f, 0)
    assert signature.variadic is True
    assert [p["name"] for p in signature.to_wire()] == ["first"]
    signature.check([1, "a", "b", "c"])
    with pytest.raises(ValidationErrors):
        signature.check([])
    assert signature_of(test_a_method_with_star_args_is_variadic, 0).variadic is False


# Over the WebSocket


@pytest.fixture
def settings(tmp_path: Path, short_tmp: Path) -> Settings:
    return Settings(
        listen=("tcp:0:interface=127.0.0.1",),
        state_dir=str(tmp_path / "state"),
        socket=str(short_tmp / "midjobs.sock"),
        plugins=(SAMPLE_SERVICES, "signature_services"),
    )


@pytest_twisted.ensureDeferred
async def test_get_methods_describes_the_signatures(admin_client: Client) -> None:
    methods = await admin_client.call("core.get_methods")
    copy = methods["signatures.copy"]
    assert copy["variadic"] is False
    assert copy["accepts"] == [
        {
            "name": "level",
            "required": True,
            "type": None,
            "schema": {
                "type": ["string"],
                "enum": ["low", "high"],
                "description": 'how hard to try: "low" gives up at the first error.',
            },
        },
        {
            "name": "target",
            "required": True,
            "type": None,
            "schema": {
                "type": ["object"],
                "properties": {
                    "host": {"type": ["string"]},
                    "port": {"type": ["integer"]},
                    "tags": {"type": ["array"], "items": {"type": ["string"]}},
                },
                "required": ["host"],
                "description": "where the copies go.",
            },
        },
        {
            "name": "paths",
            "required": False,
            "type": None,
            "schema": {
                "type": ["array"],
                "items": {"type": ["string"]},
                "default": [],
                "description": "the files to copy, as /a/b.",
            },
        },
        {
            "name": "mode",
            "required": False,
            "type": None,
            "schema": {"type": ["string", "null"], "enum": ["fast", "safe", None], "default": None},
        },
        {"name": "retries", "required": False, "type": ["integer"], "schema": {"type": ["integer"], "default": 3}},
        {"name": "callback", "required": False, "type": None, "schema": {"type": None}},
    ]
    concat = methods["signatures.concat"]
    assert concat["variadic"] is True
    assert concat["accepts"] == []
    # Every method has the key; those of the daemon's own services too.
    assert all(isinstance(m["variadic"], bool) for m in methods.values())
    assert methods["core.get_jobs"]["variadic"] is False

    # A call built from the description is one the method takes.
    described = copy["accepts"]
    params = ["high", {"host": "h", "port": 22}, described[2]["schema"]["default"], "safe"]
    assert await admin_client.call_job("signatures.copy", *params) == [*params, 3]
    assert await admin_client.call("signatures.concat", "a", "b", "c") == "abc"
