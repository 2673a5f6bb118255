"""
The JSON-RPC 2.0 protocol over a WebSocket at ``/api/current`` (C{docs/protocol.rst}).
"""

from ._protocol import RpcProtocol, RpcServerFactory
from ._session import Session

__all__ = ["RpcProtocol", "RpcServerFactory", "Session"]
