"""
Queries cannot stall anyone (issue 11, finding 1): the C{~} operator runs in
time linear in the text (RE2), whatever the pattern.

Daemons run in this process on 127.0.0.1; the connections are real.
"""

from __future__ import annotations

import errno
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from conftest import RunningDaemon
from midjobs.client import ClientValidationErrors, connect

BOB = ("bob", "bob-secret-pass")

#: A bound no correct answer comes near (they take milliseconds); the
#: backtracking matcher of finding 1 took 21 s on this pattern.
_GUARD = 10


@pytest_twisted.async_yield_fixture
async def bob(daemon: RunningDaemon, admin_client: Any) -> AsyncIterator[Any]:
    """
    A logged-in user with no roles.
    """
    await admin_client.call("user.create", {"username": BOB[0], "password": BOB[1], "roles": []})
    client = await connect(daemon.ws_url, reactor=reactor)
    assert await client.login(*BOB)
    yield client
    await client.close()


@pytest_twisted.ensureDeferred
async def test_catastrophic_regex_answers_at_once(admin_client: Any, bob: Any) -> None:
    """
    Finding 1: C{^(a|a)+$} against C{"a" * 28 + "!"} backtracks 2**28 times
    in Python's C{re}, on the reactor thread; RE2 answers in linear time,
    and the admin's ping, sent alongside, is answered too.
    """
    statuses = await bob.call_job("core.bulk", "core.ping", [[]], "a" * 28 + "!")
    assert statuses == [{"job_id": None, "result": "pong", "error": None}]
    query = bob.call("core.get_jobs", [["arguments.2", "~", "^(a|a)+$"]]).addTimeout(_GUARD, reactor)
    ping = admin_client.call("core.ping").addTimeout(_GUARD, reactor)
    assert await gatherResults([query, ping]) == [[], "pong"]
    # The same search finds what it should.
    found = await bob.call("core.get_jobs", [["arguments.2", "~", "^(a|a)+!$"]])
    assert [job["arguments"][2] for job in found] == ["a" * 28 + "!"]
    insensitive = await bob.call("core.get_jobs", [["arguments.2", "C~", "^A+!"]])
    assert [job["id"] for job in insensitive] == [job["id"] for job in found]


@pytest.mark.parametrize("pattern", [r"(a)\1", r"a(?=b)", r"(?<!a)b", "(", "a{2000}"])
@pytest_twisted.ensureDeferred
async def test_patterns_re2_cannot_compile_are_refused(bob: Any, pattern: str) -> None:
    """
    Backreferences and lookaround (which only a backtracking matcher has),
    and malformed patterns, fail validation with EINVAL naming the filter.
    """
    with pytest.raises(ClientValidationErrors) as info:
        await bob.call("core.get_jobs", [["method", "=", "core.bulk"], ["arguments.2", "~", pattern]])
    [error] = info.value.errors
    assert (error.attribute, error.errno) == ("filters.1", errno.EINVAL)
    assert error.errmsg.startswith("Invalid regular expression")

