"""
Where midjobs keeps its state, shared by the daemon and its clients.

The daemon's default UNIX socket lives in the state directory, so
C{midclt} with no C{-u} finds a daemon started with no options.
"""

from __future__ import annotations

import os

__all__ = ["SOCKET_NAME", "default_state_dir", "default_socket_path"]

#: The file name of the daemon's UNIX socket inside the state directory.
SOCKET_NAME = "midjobs.sock"


def default_state_dir() -> str:
    """
    The state directory for the current user.

    C{/var/lib/midjobs} for root (uid 0); otherwise C{$XDG_STATE_HOME/midjobs}
    when C{XDG_STATE_HOME} is set to an absolute path, else
    C{~/.local/state/midjobs}.
    """
    if os.getuid() == 0:
        return "/var/lib/midjobs"
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if os.path.isabs(xdg):
        return os.path.join(xdg, "midjobs")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "midjobs")


def default_socket_path() -> str:
    """
    The daemon's default UNIX socket: C{<state dir>/midjobs.sock}.
    """
    return os.path.join(default_state_dir(), SOCKET_NAME)
