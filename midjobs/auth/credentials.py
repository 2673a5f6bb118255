"""
Credentials of a UNIX-socket peer, read from the kernel with C{SO_PEERCRED}.
"""

from __future__ import annotations

import socket
import struct

import attrs
from zope.interface import implementer

from midjobs.auth.interfaces import IPeerCredentials

__all__ = ["PeerCredentials", "peer_credentials"]

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@implementer(IPeerCredentials)
@attrs.frozen
class PeerCredentials:
    """
    Who the peer of a UNIX socket is, as the kernel reports it.
    """

    pid: int
    uid: int
    gid: int


def peer_credentials(transport: object) -> PeerCredentials | None:
    """
    The peer credentials of a Twisted UNIX transport, or C{None} if the
    transport is not a connected UNIX socket (TCP, TLS-wrapped, in-memory) or
    the platform has no C{SO_PEERCRED}.
    """
    get_handle = getattr(transport, "getHandle", None)
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if get_handle is None or so_peercred is None:
        return None
    handle = get_handle()
    if not isinstance(handle, socket.socket) or handle.family != socket.AF_UNIX:
        return None
    try:
        raw = handle.getsockopt(socket.SOL_SOCKET, so_peercred, _UCRED.size)
    except OSError:
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    if uid < 0:
        # Not connected: the kernel reports no peer as uid -1.
        return None
    return PeerCredentials(pid=pid, uid=uid, gid=gid)
