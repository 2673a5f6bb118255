"""
File descriptors: the process's limit, and how many connections fit under it.

Every connection holds a descriptor.  If the connections took them all, the
UNIX socket could accept no C{midclt}, the database and job logs could not
open files, and a listening port would spin on C{EMFILE}.  So the daemon
raises its soft C{RLIMIT_NOFILE} to the hard limit at start
(L{raise_descriptor_limit}), and its connection caps keep a reserve below it
(L{connection_capacity}).
"""

from __future__ import annotations

import resource

__all__ = ["RESERVE", "connection_capacity", "raise_descriptor_limit"]

#: Descriptors kept for everything but TCP and TLS connections (the UNIX
#: socket and its clients, the database, logs, job log files, pipes that
#: spool to files), at least; a tenth of the limit if that is more.
RESERVE = 256

#: The soft limit asked for when the hard one is unlimited.
_UNLIMITED_TARGET = 1 << 20


def raise_descriptor_limit() -> int:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit, if it can be; return
    the soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _UNLIMITED_TARGET
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def connection_capacity(descriptor_limit: int) -> int:
    """
    How many connections may be open under C{descriptor_limit}, the reserve
    (L{RESERVE}, or a tenth of the limit if more) kept aside; at least 1.
    """
    reserve = max(RESERVE, descriptor_limit // 10)
    return max(descriptor_limit - reserve, 1)
