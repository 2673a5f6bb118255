"""
One job list and one event stream over real nodes: two C{twistd midjobs}
processes on one private PostgreSQL database (L{cluster_nodes}).  A job
started on n1 is seen, waited for and aborted through n2, and n2's
C{core.get_jobs} subscriber hears of it as it runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted

from midjobs.client import Client, ClientCallError, connect

from cluster_nodes import Node, NodeStarter, cluster_nodes  # noqa: F401 (fixture)
from test_jobs import record, subscribed

#: The fixtures postgres_server, postgres_database and cluster_nodes.
pytest_plugins = ["postgres_server"]



async def _admin(node: Node) -> Client:
    """
    An administrator of C{node}: its UNIX socket's trusted peer.
    """
    client: Client = await connect(node.unix_url)
    return client


@pytest_twisted.async_yield_fixture
async def two_nodes(postgres_database: str, cluster_nodes: NodeStarter) -> AsyncIterator[tuple[Client, Client]]:
    """
    Clients of the nodes n1 and n2 of one cluster.
    """
    n1, n2 = cluster_nodes("n1", "n2", database_url=postgres_database)
    one, two = await _admin(n1), await _admin(n2)
    yield one, two
    for client in (one, two):
        await client.close()


@pytest_twisted.ensureDeferred
async def test_a_job_on_n1_is_told_listed_and_waited_for_on_n2(two_nodes: tuple[Client, Client]) -> None:
    one, two = two_nodes
    events = await subscribed(two)
    job_id = await one.call("core.job_test", {"sleep": 1})
    running = await events.state(job_id, "RUNNING")
    assert running["node"] == "n1"
    listed = await record(two, job_id)
    assert listed["node"] == "n1" and listed["method"] == "core.job_test"
    waited: Any = await two.call_job("core.job_wait", job_id)
    assert waited is True
    done = await events.state(job_id, "SUCCESS")
    assert done["progress"]["percent"] == 100
    msgs = [msg for msg, _ in events.of(job_id)]
    assert msgs[0] == "added" and set(msgs[1:]) == {"changed"}


@pytest_twisted.ensureDeferred
async def test_n2_aborts_a_job_on_n1(two_nodes: tuple[Client, Client]) -> None:
    one, two = two_nodes
    events = await subscribed(one)
    job_id = await one.call("core.job_test", {"sleep": 60})
    await events.state(job_id, "RUNNING")
    assert await two.call("core.job_abort", job_id) is None
    aborted = await events.state(job_id, "ABORTED")
    assert aborted["error"] == "Job aborted"
    assert (await record(two, job_id))["state"] == "ABORTED"


@pytest_twisted.ensureDeferred
async def test_no_such_job_on_any_node(two_nodes: tuple[Client, Client]) -> None:
    _, two = two_nodes
    with pytest.raises(ClientCallError) as missing:
        await two.call("core.job_abort", 987654)
    assert missing.value.errname == "ENOENT"


@pytest_twisted.ensureDeferred
async def test_a_wait_on_n2_shows_the_progress_of_the_job_on_n1(two_nodes: tuple[Client, Client]) -> None:
    one, two = two_nodes
    events = await subscribed(two)
    job_id = await one.call("core.job_test", {"sleep": 3})
    waiting = await two.call("core.job_wait", job_id)
    # job_test reports its progress each second: the wait shows it before the end.
    moving = await events.wait_for(
        lambda msg, id, fields: id == waiting and fields["state"] == "RUNNING" and 0 < (fields["progress"]["percent"] or 0) < 100
    )
    assert moving["method"] == "core.job_wait"
    assert (await events.state(waiting, "SUCCESS"))["result"] is True
