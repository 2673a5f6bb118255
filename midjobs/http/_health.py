"""
C{GET /_health}: whether the daemon serves and its store takes writes, for
load balancers.

Without arguments it needs no credentials and says one word: C{200 ok} or
C{503 unavailable} (the store takes no writes, or the daemon is stopping).
With C{?full} it needs the credentials of C{/metrics} (the C{METRICS_READ},
C{READONLY_ADMIN} or C{FULL_ADMIN} role) and answers the reasons as JSON
(L{midjobs.health.HealthReport.to_json}), with the same status code.  The
store is asked at most once a second (L{midjobs.health.StoreCheck}), so a
balancer polling often costs nothing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..logs import logger
from ._auth import AuthenticationFailed, authenticate
from ._metrics import may_read_metrics

if TYPE_CHECKING:
    from ..middleware import Middleware

__all__ = ["serve_health"]

log = logger(__name__)


def _answer(request: Any, code: int, content_type: bytes, body: bytes) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Cache-Control", b"no-store")
    if code == 401:
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="midjobs"')
    return body


def _plain(request: Any, code: int, message: str) -> bytes:
    return _answer(request, code, b"text/plain; charset=utf-8", message.encode("utf-8") + b"\n")


def _wants_full(request: Any) -> bool:
    """
    Whether the query names C{full} (C{?full}, C{?full=1}): twisted.web's
    C{request.args} drops a name without C{=}.
    """
    query = urlsplit(request.uri).query
    return b"full" in parse_qs(query, keep_blank_values=True)


async def serve_health(middleware: Middleware, request: Any) -> bytes:
    """
    Answer C{GET /_health} (see the module docstring).
    """
    if not _wants_full(request):
        report = await middleware.health.report()
        return _plain(request, 200, "ok") if report.healthy else _plain(request, 503, "unavailable")
    try:
        user = await authenticate(middleware.logins, request)
    except AuthenticationFailed as e:
        return _plain(request, 401, str(e))
    if not may_read_metrics(user):
        log.warn(
            "{username} from {peer} may not read the daemon's health",
            username=user.username,
            peer=request.getClientAddress(),
        )
        return _plain(request, 403, "The METRICS_READ, READONLY_ADMIN or FULL_ADMIN role is needed")
    report = await middleware.health.report()
    body = json.dumps(report.to_json()).encode("utf-8") + b"\n"
    return _answer(request, 200 if report.healthy else 503, b"application/json", body)
