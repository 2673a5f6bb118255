"""
C{GET /metrics} on the daemon's listeners: the Prometheus text format, for
callers with the C{METRICS_READ}, C{READONLY_ADMIN} or C{FULL_ADMIN} role.

Prometheus sends its API key as C{Authorization: Bearer <key>} (the
C{authorization} block of a scrape config); any credentials L{authenticate}
takes are accepted.  No credentials, or refused ones: 401.  A user without
the role: 403, logged with the user and address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource

from ..auth.interfaces import IUser
from ..auth.roles import METRICS_READ, READONLY_ADMIN
from ..config import Settings
from ..logs import logger
from ._auth import AuthenticationFailed, authenticate
from ._channel import Site
from ._typed_request import TypedRequest

if TYPE_CHECKING:
    from ..middleware import Middleware

__all__ = ["MetricsOnly", "answer", "may_read_metrics", "metrics_page", "metrics_site", "plain", "refusal", "serve_metrics"]

log = logger(__name__)

#: The text format every Prometheus 2 reads (our names need none of 1.0.0's escaping).
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def may_read_metrics(user: IUser) -> bool:
    """
    Whether C{user} (an L{midjobs.auth.IUser}) may read C{/metrics}.
    """
    roles: frozenset[str] = user.roles
    return bool(user.is_full_admin) or not roles.isdisjoint((METRICS_READ, READONLY_ADMIN))


def answer(request: TypedRequest, code: int, content_type: bytes, body: bytes) -> bytes:
    """
    Set the status and headers of an operator's page (C{/metrics},
    C{/_health}); return C{body}.
    """
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Cache-Control", b"no-store")
    if code == 401:
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="midjobs"')
    return body


def plain(request: TypedRequest, code: int, message: str) -> bytes:
    return answer(request, code, b"text/plain; charset=utf-8", message.encode("utf-8") + b"\n")


async def refusal(middleware: Middleware, request: TypedRequest, what: str) -> bytes | None:
    """
    The answer refusing C{request} an operator's page (C{what}, for the
    log): 401 without valid credentials, 403 without the role
    (L{may_read_metrics}); L{None} if it may have it.
    """
    try:
        user = await authenticate(middleware.logins, request)
    except AuthenticationFailed as e:
        return plain(request, 401, str(e))
    if not may_read_metrics(user):
        log.warn(
            "{username} from {peer} may not read {what}",
            username=user.username,
            peer=request.getClientAddress(),
            what=what,
        )
        return plain(request, 403, "The METRICS_READ, READONLY_ADMIN or FULL_ADMIN role is needed")
    return None


def metrics_page(registry: CollectorRegistry, request: TypedRequest) -> bytes:
    """
    The metrics of C{registry} as the answer to C{request}.
    """
    request.setHeader(b"Content-Type", CONTENT_TYPE)
    request.setHeader(b"Cache-Control", b"no-store")
    return generate_latest(registry)


async def serve_metrics(middleware: Middleware, request: TypedRequest) -> bytes:
    """
    Answer C{GET /metrics}: 401 without valid credentials, 403 without the
    role, else the metrics of C{middleware}.
    """
    refused = await refusal(middleware, request, "the metrics")
    if refused is not None:
        return refused
    return metrics_page(middleware.metrics.registry, request)


class MetricsOnly(Resource):
    """
    The root of C{[metrics] listen}: C{/metrics} to anyone who asks, and a
    404 for every other path.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # not annotated in Twisted
        self._registry = registry

    def getChild(self, path: bytes, request: TypedRequest) -> IResource:
        if path == b"metrics" and not request.postpath:
            return _Page(self._registry)
        return notFound()

    def render(self, request: TypedRequest) -> bytes:
        page: bytes = notFound().render(request)  # type: ignore[no-untyped-call]  # not annotated in Twisted
        return page


class _Page(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # not annotated in Twisted
        self._registry = registry

    def render_GET(self, request: TypedRequest) -> bytes:
        return metrics_page(self._registry, request)


def metrics_site(middleware: Middleware) -> Site:
    """
    The twisted.web site of C{[metrics] listen}: C{GET /metrics} answers
    the middleware's metrics to anyone (every other path is a 404), with
    the header deadline and idle timeout of the daemon's other listeners.
    """
    settings = middleware.settings or Settings()
    site = Site(
        MetricsOnly(middleware.metrics.registry),
        timeout=settings.idle_timeout,
        header_timeout=settings.header_timeout,
        reactor=middleware.reactor,
    )
    site.displayTracebacks = False
    site.noisy = False
    return site
