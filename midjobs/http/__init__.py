"""
The HTTP side of the daemon: one Klein app per site, serving the WebSocket and the transfer routes.
"""

from ._app import HttpApp, make_site
from ._limits import ConnectionLimits, LimitedFactory, LimitingReactor, RefusalLog
from ._metrics import metrics_site

__all__ = ["ConnectionLimits", "HttpApp", "LimitedFactory", "LimitingReactor", "RefusalLog", "make_site", "metrics_site"]
