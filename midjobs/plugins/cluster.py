"""
C{cluster.*}: the nodes that share this daemon's job store.
"""

from __future__ import annotations

from typing import Any

from ..service import Service, read_only

__all__ = ["ClusterService"]


class ClusterService(Service):
    namespace = "cluster"

    @read_only
    async def nodes(self) -> list[dict[str, Any]]:
        """
        Each node of the cluster, this one included, by name: C{name},
        C{advertise} (the URL at which the other nodes reach it), C{state}
        (C{ONLINE} or C{OFFLINE}), C{heartbeat} (its last, a date) and
        C{running_jobs}.  A daemon alone is a cluster of one node.
        """
        nodes: list[dict[str, Any]] = await self.middleware.cluster.nodes()
        return nodes
