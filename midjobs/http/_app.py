"""
The Klein app behind every listener.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autobahn.twisted.resource import WebSocketResource
from klein import Klein, KleinRenderable
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from ..config import Settings
from ..rpc import RpcServerFactory
from ..web import StaticFiles, index_page
from ._access_log import access_log_line
from ._channel import Site
from ._answers import plain
from ._download import serve_download, serve_relayed_download
from ._health import serve_health
from ._limits import RefusalLog
from ._metrics import serve_metrics
from ._request import SiteRequestFactory
from ._web_session import WebSessionRoutes

if TYPE_CHECKING:
    from ..middleware import Middleware

__all__ = ["HttpApp", "make_site"]


class HttpApp:
    """
    The routes of one daemon: C{/api/current} (the WebSocket),
    C{/_download/<id>}, C{/_internal/download/<id>} (for the other nodes of
    a cluster), C{/metrics} (L{serve_metrics}), C{/_health} (L{serve_health}), and the web
    task manager (C{/}, C{/static/...}, and its login C{/_session}: L{WebSessionRoutes}).
    C{POST /_upload} never reaches the app: see L{SiteRequestFactory}.
    """

    app = Klein()

    def __init__(self, middleware: Middleware) -> None:
        self.middleware = middleware
        self.rpc_factory = RpcServerFactory(middleware)
        # Autobahn's resource is unannotated.
        self.websocket: IResource = WebSocketResource(self.rpc_factory)  # type: ignore[no-untyped-call]
        self.static_files = StaticFiles()
        self.index_page = index_page(self.static_files)
        self.web_sessions = WebSessionRoutes(middleware)

    @app.route("/api/current")
    def api_current(self, request: IRequest) -> IResource:
        return self.websocket

    @app.route("/_download/<int:job_id>", methods=["GET"])
    def download(self, request: IRequest, job_id: int) -> KleinRenderable:
        """
        Stream the output of job C{job_id} that C{core.download} prepared.
        """
        return Deferred.fromCoroutine(serve_download(self.middleware, request, job_id))

    @app.route("/_internal/download/<int:job_id>", methods=["GET"])
    def relayed_download(self, request: IRequest, job_id: int) -> KleinRenderable:
        """
        Stream the output of job C{job_id} to the node of the cluster that
        relays it (L{serve_relayed_download}).
        """
        return Deferred.fromCoroutine(serve_relayed_download(self.middleware, request, job_id))

    @app.route("/_internal/", branch=True)
    def internal(self, request: IRequest) -> bytes:
        """
        What the nodes of a cluster ask each other for: nothing else here
        (403; 404 on a single daemon).
        """
        if self.middleware.download_relay is None:
            return plain(request, 404, "No such resource")
        return plain(request, 403, "A relay needs a valid credential")

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> Deferred[bytes]:
        """
        The daemon's metrics, for Prometheus (a C{METRICS_READ} user's API key).
        """
        return Deferred.fromCoroutine(serve_metrics(self.middleware, request))

    @app.route("/_health", methods=["GET", "HEAD"])
    def health(self, request: IRequest) -> Deferred[bytes]:
        """
        200 when the daemon serves and its store takes writes, else 503;
        with C{?full}, the reasons (for C{/metrics}'s readers).
        """
        return Deferred.fromCoroutine(serve_health(self.middleware, request))

    @app.route("/_session", methods=["POST"])
    def session_login(self, request: IRequest) -> Deferred[bytes]:
        """
        Log the web page in: a session cookie (L{WebSessionRoutes}).
        """
        return Deferred.fromCoroutine(self.web_sessions.login(request))

    @app.route("/_session/token", methods=["POST"])
    def session_token(self, request: IRequest) -> Deferred[bytes]:
        """
        Trade the session cookie for a WebSocket login token.
        """
        return Deferred.fromCoroutine(self.web_sessions.token(request))

    @app.route("/_session", methods=["DELETE"])
    @app.route("/_session/logout", methods=["POST"])
    def session_logout(self, request: IRequest) -> Deferred[bytes]:
        """
        End the web page's session, in every tab.  C{POST /_session/logout}
        is for browsers, whose C{DELETE} without a body carries no
        C{Content-Length}: over HTTP/2 that reads as a body, which this route refuses.
        """
        return Deferred.fromCoroutine(self.web_sessions.logout(request))

    @app.route("/", methods=["GET", "HEAD"])
    def index(self, request: IRequest) -> IResource:
        """
        The web task manager's page.
        """
        return self.index_page

    @app.route("/static/", branch=True, methods=["GET", "HEAD"])
    def static(self, request: IRequest) -> IResource:
        """
        The page's scripts, style sheets and images.
        """
        return self.static_files


def make_site(middleware: Middleware) -> Site:
    """
    The twisted.web site to serve on each listener, with the header deadline
    and keep-alive idle timeout of the middleware's settings.
    """
    settings = middleware.settings or Settings()
    site = Site(
        HttpApp(middleware).app.resource(),
        logFormatter=access_log_line,
        timeout=settings.idle_timeout,
        header_timeout=settings.header_timeout,
        reactor=middleware.reactor,
    )
    site.displayTracebacks = False
    # Requests whose headers come too late count as the header_timeout limit.
    site.refusals = RefusalLog(middleware.reactor, limit="header_timeout", counts=middleware.metrics)
    # POST /_upload streams its body to a job: see _request.SiteRequest.
    # Twisted types requestFactory as Request's class; it calls any INonQueuedRequestFactory.
    site.requestFactory = SiteRequestFactory(middleware)  # type: ignore[assignment]
    return site
