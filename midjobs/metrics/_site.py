"""
The listener of C{[metrics] listen}: C{/metrics} without credentials, and
nothing else, for a Prometheus on a trusted network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.resource import Resource

if TYPE_CHECKING:
    from twisted.web.server import Site

    from ..middleware import Middleware

__all__ = ["MetricsPage", "metrics_site"]


class MetricsPage(Resource):
    """
    The metrics of a registry, to anyone who asks.
    """

    isLeaf = True

    def __init__(self, registry: Any) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Any) -> bytes:
        # Imported here: the HTTP package imports the middleware, which imports this one.
        from ..http._metrics import metrics_page

        return metrics_page(self._registry, request)


def metrics_site(middleware: Middleware) -> Site:
    """
    The twisted.web site of C{[metrics] listen}: C{GET /metrics} answers
    the middleware's metrics to anyone (every other path is a 404), with
    the header deadline and idle timeout of the daemon's other listeners.
    """
    from ..config import Settings
    from ..http._channel import Site

    settings = middleware.settings or Settings()
    root = Resource()
    root.putChild(b"metrics", MetricsPage(middleware.metrics.registry))
    site = Site(root, timeout=settings.idle_timeout, header_timeout=settings.header_timeout, reactor=middleware.reactor)
    site.displayTracebacks = False
    site.noisy = False
    return site
