"""
C{core.bulk}'s description (issue 11, findings 6 and 14): only plain
positional fields are replaced, by the arguments as records show them
(secrets hidden), and a step's description is at most 1 KiB.

A daemon runs in this process on 127.0.0.1; the clients are real.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from conftest import RunningDaemon
from midjobs.arguments import REDACTED
from midjobs.client import connect
from midjobs.plugins.core import MAX_DESCRIPTION, describe


class BulkEvents:
    """
    The C{core.get_jobs} events a client got, and a Deferred for the end of
    each C{core.bulk} job.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._ended: dict[int, Deferred[dict[str, Any]]] = {}

    def __call__(self, msg: str, collection: str, id: int, fields: dict[str, Any]) -> None:
        self.events.append(fields)
        if fields.get("method") == "core.bulk" and fields.get("state") == "SUCCESS":
            self.ended(id).callback(fields)

    def ended(self, job_id: int) -> Deferred[dict[str, Any]]:
        if job_id not in self._ended:
            self._ended[job_id] = Deferred()
        return self._ended[job_id]

    def steps(self, job_id: int) -> list[str]:
        """
        The progress descriptions job C{job_id} went through.
        """
        return [e["progress"]["description"] for e in self.events if e.get("id") == job_id and e.get("progress")]


async def logged_in(daemon: RunningDaemon, admin: Any, username: str, roles: list[str]) -> Any:
    password = f"{username}-secret-pass"
    await admin.call("user.create", {"username": username, "password": password, "roles": roles})
    client = await connect(daemon.ws_url, reactor=reactor)
    assert await client.login(username, password)
    return client


@pytest_twisted.async_yield_fixture
async def bob(daemon: RunningDaemon, admin_client: Any) -> AsyncIterator[Any]:
    """
    A logged-in user with no roles.
    """
    client = await logged_in(daemon, admin_client, "bob", [])
    yield client
    await client.close()


@pytest_twisted.ensureDeferred
async def test_format_specs_are_not_applied(bob: Any) -> None:
    """
    Finding 6: C{"{0:>500000000}"} built a 500 MB string.  Format specs,
    conversions, attributes and indexes stay as they are written; plain
    positional fields are replaced.
    """
    seen = BulkEvents()
    await bob.subscribe("core.get_jobs", seen)
    template = "{0:>50000}|{0!r}|{0.__class__}|{0[0]}|{name}|{7}|{{0}}|{}|{1}"
    job_id = await bob.call("core.bulk", "core.ping", [["x", 2]], template)
    await seen.ended(job_id)
    assert "0 / 1: {0:>50000}|{0!r}|{0.__class__}|{0[0]}|{name}|{7}|{0}|x|2" in seen.steps(job_id)


@pytest_twisted.ensureDeferred
async def test_descriptions_are_capped(bob: Any) -> None:
    seen = BulkEvents()
    await bob.subscribe("core.get_jobs", seen)
    job_id = await bob.call("core.bulk", "core.ping", [["y" * 5000]], "{0}{0}")
    await seen.ended(job_id)
    [step] = [text for text in seen.steps(job_id) if text.startswith("0 / 1: ")]
    assert step == "0 / 1: " + "y" * (MAX_DESCRIPTION - 1) + "…"


@pytest_twisted.ensureDeferred
async def test_descriptions_hide_secrets(daemon: RunningDaemon, admin_client: Any) -> None:
    """
    Finding 14: C{"Creating {0}"} around C{user.create} sent the password to
    a READONLY_ADMIN subscriber.  The description is built from the
    arguments as the record shows them.
    """
    carol = await logged_in(daemon, admin_client, "carol", ["READONLY_ADMIN"])
    try:
        seen = BulkEvents()
        await carol.subscribe("core.get_jobs", seen)
        user = {"username": "erin", "password": "pw-789-secret", "roles": []}
        job_id = await admin_client.call("core.bulk", "user.create", [[user]], "Creating {0}")
        await seen.ended(job_id)
        assert "pw-789-secret" not in repr(seen.events)
        shown = {"username": "erin", "password": REDACTED, "roles": []}
        assert f"0 / 1: Creating {shown}" in seen.steps(job_id)
        # The call itself had the real password.
        erin = await connect(daemon.ws_url, reactor=reactor)
        try:
            assert await erin.login("erin", "pw-789-secret")
        finally:
            await erin.close()
    finally:
        await carol.close()


@pytest.mark.parametrize(
    ("template", "arguments", "described"),
    [
        ("Creating {0}", ["a"], "Creating a"),
        ("{} then {}", [1, 2], "1 then 2"),
        ("{1}{0}", ["a", "b"], "ba"),
        ("{{}} {{0}} }} {{", [1], "{} {0} } {"),
        ("{0:>9}{0!s}{0.real}{0[0]}{x}{}", [5], "{0:>9}{0!s}{0.real}{0[0]}{x}5"),
        ("{3} {} {", ["a"], "{3} a {"),
        ("{" + "9" * 5000 + "}", [1], "{" + "9" * (MAX_DESCRIPTION - 2) + "…"),
        ("no fields", [], "no fields"),
    ],
)
def test_describe(template: str, arguments: list[Any], described: str) -> None:
    assert describe(template, arguments) == described
