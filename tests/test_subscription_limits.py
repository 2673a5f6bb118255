"""
Subscriptions are bounded per connection, and an event costs one check per
subscriber, not per subscription (issue 11, finding 2: 20,000
C{core.subscribe("core.get_jobs")} on one connection made every event cost
20,000 visibility checks).  The event hub and the limit in memory (the limit
on the daemon's JSON-RPC endpoint, L{open_endpoint}); delivery over the wire
with a real daemon.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Iterator

import attrs
import pytest
import pytest_twisted
from twisted.logger import formatEvent

from midjobs.auth.avatar import User
from midjobs.client import Client
from midjobs.config import Settings
from midjobs.events import EventHub

from test_protocol_jsonrpc import Endpoint, open_endpoint
from test_rpc import METHOD_CALL_ERROR, check_error


#: A small limit, so that the test reaches it quickly.
LIMIT = 5


class Listener:
    """
    A subscriber that keeps what it receives.
    """

    def __init__(self, user: Any) -> None:
        self.user = user
        self.received: list[Any] = []

    def send_event(self, notification: Any) -> None:
        self.received.append(notification)


def test_one_check_per_subscriber_not_per_subscription() -> None:
    """
    A subscriber subscribed many times to one name costs one visibility
    check per event, whether it may see the event or not, and gets it once;
    each subscription still has its own id.
    """
    checks: list[Any] = []

    def may_see(user: Any, name: str, fields: Any) -> bool:
        checks.append(user)
        return user == "admin"

    hub = EventHub()
    hub.register("core.get_jobs", "Jobs", may_see=may_see)
    bob, admin = Listener("bob"), Listener("admin")
    ids = {hub.subscribe(bob, "core.get_jobs") for _ in range(1000)}
    ids |= {hub.subscribe(admin, "core.get_jobs") for _ in range(1000)}
    ids.add(hub.subscribe(admin, "*"))
    assert len(ids) == 2001
    hub.send("core.get_jobs", "added", 1, {"id": 1})
    assert sorted(checks) == ["admin", "bob"]
    assert bob.received == []
    assert len(admin.received) == 1
    assert hub.subscription_count(admin) == 1001


def test_unsubscribing_one_of_many_keeps_the_rest() -> None:
    hub = EventHub()
    hub.register("core.get_jobs", "Jobs")
    listener = Listener("admin")
    first = hub.subscribe(listener, "core.get_jobs")
    second = hub.subscribe(listener, "core.get_jobs")
    assert hub.unsubscribe(first) is not None
    assert hub.has_subscribers("core.get_jobs")
    hub.send("core.get_jobs", "added", 1, {"id": 1})
    assert len(listener.received) == 1
    assert hub.unsubscribe(second) is not None
    assert not hub.has_subscribers("core.get_jobs")
    assert hub.subscription_count(listener) == 0
    hub.unsubscribe_all(listener)


@pytest.fixture
def settings(settings: Any) -> Any:
    return attrs.evolve(settings, max_subscriptions=LIMIT)



BOB_USER = User("bob", (), "LOGIN_PASSWORD", user_id=2)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    """
    The JSON-RPC endpoint, in memory, of a daemon with C{max_subscriptions} of L{LIMIT}.
    """
    made = open_endpoint(tmp_path, Settings(max_subscriptions=LIMIT))
    yield made
    made.close()


def test_subscriptions_past_the_limit_fail(endpoint: Endpoint, log_events: list) -> None:
    """
    Past C{max_subscriptions} on one connection, C{core.subscribe} fails
    with EBUSY naming the limit, logged with the user and address; ending
    one makes room again; other connections are not concerned.
    """
    admin = endpoint.connect().login()
    bob = endpoint.connect().login(BOB_USER)
    ids = [bob.call("core.subscribe", "core.get_jobs") for _ in range(LIMIT)]
    assert len(set(ids)) == LIMIT
    for name in ("core.get_jobs", "*"):
        error = check_error(bob.request("core.subscribe", [name]), bob.sent_ids[-1], METHOD_CALL_ERROR)
        assert error["data"]["error"] == errno.EBUSY
        assert f"({LIMIT})" in error["data"]["reason"]
    refusals = [formatEvent(e) for e in log_events if "subscriptions" in e.get("log_format", "")]
    assert len(refusals) == 1, refusals
    assert "bob" in refusals[0] and "192.0.2.7" in refusals[0]

    bob.call("core.unsubscribe", ids[0])
    bob.call("core.subscribe", "core.get_jobs")
    # Another connection of the same user has its own allowance.
    other = endpoint.connect().login(BOB_USER)
    for _ in range(LIMIT):
        other.call("core.subscribe", "core.get_jobs")
    assert admin.call("core.subscribe", "core.get_jobs")
    assert bob.call("core.ping") == "pong"


@pytest_twisted.ensureDeferred
async def test_duplicate_subscriptions_deliver_once(daemon: Any, admin_client: Client) -> None:
    """
    Over the wire too: three subscriptions to one name, each event once.
    """
    received: list[Any] = []
    await admin_client.subscribe("core.get_jobs", lambda msg, name, id, fields: received.append((msg, id, fields)))
    # Two more subscriptions the client does not know of: each event still arrives once.
    await admin_client.call("core.subscribe", "core.get_jobs")
    await admin_client.call("core.subscribe", "core.get_jobs")
    job_id = await admin_client.call("core.job_test")
    await admin_client.call("core.job_wait", job_id)
    # A ping answered after the last event: everything sent before it has arrived.
    await admin_client.call("core.ping")
    mine = [(msg, fields["state"]) for msg, id, fields in received if id == job_id]
    assert mine[0] == ("added", "WAITING") and mine[-1] == ("changed", "SUCCESS"), mine
    assert mine.count(("changed", "SUCCESS")) == 1, mine
