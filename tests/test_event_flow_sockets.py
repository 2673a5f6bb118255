"""
Events have flow control, over real sockets (issue 11, finding 3: a
subscriber that never read while another connection ran jobs took the
daemon from 79 to 815 MiB in 20 s).

A client subscribed to C{core.get_jobs} stops reading; another runs jobs
with large records.  The daemon stops writing to the first once its socket
is full, keeps at most C{[limits] event_queue} bytes for it, then closes it
with 1008; the second's calls go on.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher

from midjobs.client import Client
from midjobs.rpc._outbox import OutboxState

from test_rpc import connect_raw, login

LIMIT = 256 * 1024
#: Bytes of description in each job: its record (arguments and description) is twice that.
PAD = 30_000
#: Jobs the test runs at most before it gives up waiting for the close.
MOST_JOBS = 400


@pytest.fixture
def settings(settings: Any) -> Any:
    return attrs.evolve(settings, max_event_queue=LIMIT)


@pytest.fixture
def closed_for_queue() -> Any:
    """
    Fires with the log line when the daemon closes a connection for its event queue.
    """
    d: Deferred[str] = Deferred()

    def observe(event: dict[str, Any]) -> None:
        if "event queue limit" in event.get("log_format", "") and not d.called:
            d.callback(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield d
    globalLogPublisher.removeObserver(observe)


def server_session(daemon: Any, port: int) -> Any:
    """
    The daemon's session of the client whose local port is C{port}.
    """
    [session] = [s for s in daemon.middleware.sessions if s.peer.port == port]
    return session


@pytest_twisted.ensureDeferred
async def test_a_subscriber_that_stops_reading_is_closed_at_the_limit(
    daemon: Any, admin_client: Client, closed_for_queue: Deferred[str]
) -> None:
    reader = await login(await connect_raw(daemon.ws_url))
    await reader.call("core.subscribe", "core.get_jobs")
    session = server_session(daemon, reader.transport.getHost().port)
    outbox = session.outbox

    # What the outbox holds, after each message it is given.
    peaks: list[int] = []
    for name in ("send_event", "send_response"):
        original = getattr(outbox, name)

        def recording(payload: Any, original: Any = original) -> None:
            original(payload)
            peaks.append(outbox.queued_bytes)

        setattr(outbox, name, recording)

    # The reader stops reading.
    reader.transport.pauseProducing()

    jobs = 0
    while not closed_for_queue.called:
        assert jobs < MOST_JOBS, f"not closed after {jobs} jobs; most queued {max(peaks)}"
        await admin_client.call("core.job_test", {"description": "x" * PAD})
        jobs += 1
    line = await closed_for_queue
    # The reader reads again, before the daemon gives up on the closing
    # handshake: what was written before the close, then the close.
    reader.transport.resumeProducing()
    was_clean, code, reason = await reader.closed_with
    assert (was_clean, code, reason) == (True, 1008, "event queue limit exceeded")
    assert any(m.get("method") == "collection_update" for m in reader.messages)
    assert "admin" in line and "127.0.0.1" in line, line

    # The outbox held events, never more than the limit, and holds none now.
    assert 0 < max(peaks) <= LIMIT
    assert outbox.state is OutboxState.CLOSED and outbox.queued_bytes == 0
    assert daemon.middleware.events.subscription_count(session) == 0 and not session.open
    # The other connection goes on.
    assert await admin_client.call("core.ping") == "pong"
    assert await admin_client.call_job("core.job_test") is True
