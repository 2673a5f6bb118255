"""
What the nodes of a cluster do when one of them, or the database, fails:
real C{twistd midjobs} nodes (L{cluster_nodes}) on a private PostgreSQL.

A node killed outright has its unfinished jobs recorded as ABORTED by a
survivor within C{node_timeout}, and its finished jobs stay listed with
their logs; a database restart loses nothing acknowledged and the nodes go
on by themselves; a node cut from the database for longer than it may be
refuses new jobs with a clear error until it is back; a second node with a
name that is online does not start.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from midjobs.client import Client, ClientCallError, connect
from midjobs.store.pg_schema import PARTS

from cluster_nodes import Node, NodeStarter, cluster_nodes, restart_node  # noqa: F401 (fixture)
from postgres_server import PostgresServer, postgres_database, postgres_server  # noqa: F401 (fixture)
from test_jobs import record, subscribed


#: Short enough for a test, long enough for a loaded 2-CPU machine.
NODE_TIMEOUT = 4.0
CONFIG = f"[cluster]\nnode_timeout = {NODE_TIMEOUT}\n"

_T = TypeVar("_T")


async def until(check: Callable[[], Awaitable[_T | None]], timeout: float, what: str) -> _T:
    """
    Ask C{check} until it answers something other than C{None}: a condition
    only the passing of time brings (a node's reconnection), with a deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = await check()
        if answer is not None:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.async_yield_fixture
async def two_nodes(
    postgres_database: str, cluster_nodes: NodeStarter
) -> AsyncIterator[tuple[Node, Node, Client, Client]]:
    n1, n2 = cluster_nodes("n1", "n2", database_url=postgres_database, config=CONFIG)
    one: Client = await connect(n1.unix_url)
    two: Client = await connect(n2.unix_url)
    yield n1, n2, one, two
    for client in (one, two):
        await client.close()


@pytest_twisted.ensureDeferred
async def test_a_killed_node_s_jobs_are_aborted_by_another_within_node_timeout(
    two_nodes: tuple[Node, Node, Client, Client]
) -> None:
    n1, _, one, two = two_nodes
    finished = await one.call("sample.logging_job", 3)
    await one.call_job("core.job_wait", finished)
    events = await subscribed(two)
    running = await one.call("core.job_test", {"sleep": 120})
    await events.state(running, "RUNNING")
    killed = time.monotonic()
    n1.kill(signal.SIGKILL)
    aborted = await events.wait_for(
        lambda msg, id, fields: id == running and fields["state"] == "ABORTED", timeout=NODE_TIMEOUT * 3
    )
    took = time.monotonic() - killed
    assert aborted["error"] == "The node n1 stopped while this job was running"
    # Within node_timeout of the kill, with a second of slack for the reaping
    # transaction and the event on a loaded machine.
    assert took <= NODE_TIMEOUT + 1.0, took
    # What n1 finished is still there, its log too, read from the database.
    done = await record(two, finished)
    assert done["state"] == "SUCCESS" and done["node"] == "n1" and done["result"] == 3
    nodes = {node["name"]: node for node in await two.call("cluster.nodes")}
    assert nodes["n1"]["state"] == "OFFLINE" and nodes["n2"]["state"] == "ONLINE"


@pytest_twisted.ensureDeferred
async def test_a_database_restart_loses_nothing_and_the_nodes_go_on(
    two_nodes: tuple[Node, Node, Client, Client], postgres_server: PostgresServer
) -> None:
    _, _, one, two = two_nodes
    before = [await one.call("core.job_test", {}), await two.call("core.job_test", {})]
    for job_id, client in zip(before, (one, two)):
        await client.call_job("core.job_wait", job_id)
    postgres_server.restart()

    async def new_job(client: Client) -> int | None:
        try:
            job_id: int = await client.call("core.job_test", {})
        except ClientCallError:
            return None  # not back yet: the error was a clear one, see the next test
        return job_id

    after = [await until(lambda: new_job(client), 30, "a new job taken") for client in (one, two)]
    for job_id, client in zip(after, (one, two)):
        assert await client.call_job("core.job_wait", job_id) is True
    for job_id in before + after:
        for client in (one, two):
            assert (await record(client, job_id))["state"] == "SUCCESS"


@pytest_twisted.ensureDeferred
async def test_a_node_cut_from_the_database_refuses_new_jobs_then_takes_them_again(
    two_nodes: tuple[Node, Node, Client, Client], postgres_server: PostgresServer
) -> None:
    n1, _, one, _ = two_nodes
    postgres_server.stop()
    try:

        async def refused() -> ClientCallError | None:
            try:
                await one.call("core.job_test", {})
            except ClientCallError as error:
                if error.errname == "ENOTCONN":
                    return error
            return None

        error = await until(refused, NODE_TIMEOUT * 3, "new jobs refused")
        assert "n1 is cut from the job database" in str(error)
        assert n1.health() == 503
        # What is not a new job is still served.
        assert await one.call("core.ping") == "pong"
    finally:
        postgres_server.start()

    async def accepted() -> Any:
        try:
            return await one.call("core.job_test", {})
        except ClientCallError:
            return None

    job_id = await until(accepted, 30, "new jobs taken again")
    assert await one.call_job("core.job_wait", job_id) is True
    assert n1.health() == 200


def test_a_second_node_with_an_online_name_does_not_start(postgres_database: str, cluster_nodes: NodeStarter) -> None:
    (first,) = cluster_nodes("n1", database_url=postgres_database)
    second = cluster_nodes.spawn("n1-again", database_url=postgres_database, node="n1")
    assert second.wait(60) == 1, second.log_tail()
    assert "node n1 is already online (host " in second.log()
    assert first.health() == 200


def test_a_node_refuses_a_database_newer_than_its_code(postgres_database: str, cluster_nodes: NodeStarter) -> None:
    (first,) = cluster_nodes("n1", database_url=postgres_database)
    first.stop()
    with psycopg.connect(postgres_database) as conn:
        conn.execute("UPDATE schema_version SET version = version + 1 WHERE name = 'cluster'")
    newer = cluster_nodes.spawn("n2", database_url=postgres_database, node="n2")
    assert newer.wait(60) == 1, newer.log_tail()
    known = len(PARTS["cluster"])
    assert (
        f"midjobs could not start: schema 'cluster' is at version {known + 1}, newer than this code ({known}): "
        "upgrade midjobs"
    ) in newer.log()
    assert "Traceback" not in newer.log()


@pytest_twisted.ensureDeferred
async def test_a_node_back_before_it_was_reaped_tells_the_others_its_cut_jobs(
    postgres_database: str, cluster_nodes: NodeStarter
) -> None:
    # A timeout longer than the test: only n1's own join can record the end.
    n1, n2 = cluster_nodes("n1", "n2", database_url=postgres_database, config="[cluster]\nnode_timeout = 600\n")
    one: Client = await connect(n1.unix_url)
    two: Client = await connect(n2.unix_url)
    try:
        events = await subscribed(two)
        running = await one.call("core.job_test", {"sleep": 120})
        await events.state(running, "RUNNING")
        await one.close()
        n1.kill(signal.SIGKILL)
        n1.wait(30)
        restart_node(n1)
        aborted = await events.wait_for(
            lambda msg, id, fields: id == running and fields["state"] == "ABORTED", timeout=30
        )
        assert aborted["error"] == "The node n1 stopped while this job was running"
    finally:
        await two.close()
