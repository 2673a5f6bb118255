"""
A connection's input is handled a share at a time (L{BYTES_PER_TURN} a turn
of the reactor), its reading paused meanwhile, so that a client pipelining
thousands of calls cannot hold the reactor for the length of its reads; and
the traceback of a failed call costs little to format.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock

from midjobs.config import Settings
from midjobs.errors import CallError
from midjobs.rpc._jsonrpc import format_trace
from midjobs.rpc._protocol import BYTES_PER_TURN

from test_event_flow import User, client_frame, open_connection


def one_turn(reactor: MemoryReactorClock) -> None:
    """
    Run what the reactor would run in its next turn: the earliest call due
    now (L{MemoryReactorClock.advance} would also run those it schedules).
    """
    call = reactor.calls.pop(0)
    call.func(*call.args, **call.kw)


def answers(frames: list[tuple[int, bytes]]) -> list[int]:
    return [json.loads(payload)["id"] for opcode, payload in frames if opcode == 1]


def test_a_long_read_is_handled_a_share_a_turn(tmp_path: Path) -> None:
    conn = open_connection(tmp_path, Settings())
    conn.protocol.session.login(User("carol"))
    calls = b"".join(client_frame(json.dumps({"jsonrpc": "2.0", "id": n, "method": "no.such"})) for n in range(1000))
    assert len(calls) > 10 * BYTES_PER_TURN

    conn.protocol.dataReceived(calls)
    first = answers(conn.frames())
    assert 0 < len(first) < 100
    assert conn.transport.producerState == "paused"

    turns = 0
    while conn.transport.producerState == "paused":
        conn.transport.clear()
        one_turn(conn.reactor)
        turns += 1
        assert len(answers(conn.frames())) < 100
    assert turns >= len(calls) // BYTES_PER_TURN
    assert conn.transport.producerState == "producing"

    conn.transport.clear()
    conn.protocol.dataReceived(client_frame(json.dumps({"jsonrpc": "2.0", "id": 1000, "method": "no.such"})))
    assert answers(conn.frames()) == [1000]


def test_what_comes_while_a_backlog_is_worked_off_waits_its_turn(tmp_path: Path) -> None:
    conn = open_connection(tmp_path, Settings())
    conn.protocol.session.login(User("carol"))
    frames = [client_frame(json.dumps({"jsonrpc": "2.0", "id": n, "method": "no.such"})) for n in range(300)]
    conn.protocol.dataReceived(b"".join(frames[:200]))
    # A read that was under way when reading paused.
    conn.protocol.dataReceived(b"".join(frames[200:]))
    seen = answers(conn.frames())
    while conn.reactor.getDelayedCalls():
        conn.transport.clear()
        one_turn(conn.reactor)
        seen += answers(conn.frames())
    assert seen == list(range(300))


def _fail(depth: int) -> None:
    if depth:
        _fail(depth - 1)
    raise CallError("Too many subscriptions on this connection (100)")


def test_a_trace_reads_as_pythons_without_column_markers() -> None:
    try:
        _fail(3)
    except CallError as e:
        error = e
    expected = [
        line
        for line in "".join(traceback.format_exception(type(error), error, error.__traceback__)).splitlines()
        if line.strip("^~ ")
    ]
    assert format_trace(error).splitlines() == expected
    # The frames of a place are formatted once; the message is each error's own.
    try:
        _fail(3)
    except CallError as e:
        again = e
    again.errmsg = "another"
    assert format_trace(again).endswith("another\n")
