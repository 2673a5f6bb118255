"""
Several daemons as one cluster on a shared PostgreSQL database: the nodes
(L{Node}: joining under a unique name, heartbeat, failure detection and
reaping of a dead node's jobs and locks).
"""

from midjobs.cluster.node import Node, NodeNameTaken, NodeState

__all__ = ["Node", "NodeNameTaken", "NodeState"]
