"""
The HTTP side of the daemon: one Klein app per site, serving the WebSocket and the transfer routes.
"""

from ._app import HttpApp, make_site

__all__ = ["HttpApp", "make_site"]
