"""
The fixture of tests/cluster_nodes.py: nodes start on ports of their own,
answer, stop or die as asked, start again where they were, take C{--database} and C{--node} when given
them, and a node that cannot start says why.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from cluster_nodes import NodeFailed, NodeStarter, cluster_nodes, restart_node, start_node  # noqa: F401 (fixture)
from postgres_server import postgres_database, postgres_server  # noqa: F401 (fixtures)


def test_nodes_start_answer_and_stop(cluster_nodes: NodeStarter) -> None:
    a, b = cluster_nodes("a", "b")
    assert a.port != b.port and a.state_dir != b.state_dir and a.socket_path != b.socket_path
    assert a.health() == b.health() == 200
    assert a.stop() == -signal.SIGTERM
    assert "Received SIGTERM" in a.log()
    b.kill()
    assert b.wait(10) == -signal.SIGKILL
    assert a.health() is None and b.health() is None


def test_a_node_restarts_where_it_was(cluster_nodes: NodeStarter) -> None:
    (node,) = cluster_nodes("a")
    port, state_dir = node.port, node.state_dir
    node.kill()
    node.wait(10)
    restart_node(node)
    assert (node.port, node.state_dir, node.health()) == (port, state_dir, 200)
    # Its log is this run's: one start-up, not two.
    assert node.log().count("midjobs is ready") == 1


def test_database_and_node_are_passed(cluster_nodes: NodeStarter, postgres_database: str) -> None:
    (node,) = cluster_nodes("n1", database_url=postgres_database)
    assert node.name == "n1"
    argv = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"--database") + 1] == postgres_database.encode()
    assert argv[argv.index(b"--node") + 1] == b"n1"
    assert node.health() == 200


def test_a_node_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(NodeFailed) as failed:
        start_node(tmp_path, "bad", config="[jobs]\nkeep_finished = -3\n")
    assert "jobs.keep_finished must be a positive integer" in str(failed.value)
