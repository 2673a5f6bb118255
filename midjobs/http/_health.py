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

from ._metrics import answer, plain, refusal

if TYPE_CHECKING:
    from ..middleware import Middleware

__all__ = ["serve_health"]


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
        return plain(request, 200, "ok") if report.healthy else plain(request, 503, "unavailable")
    refused = await refusal(middleware, request, "the daemon's health")
    if refused is not None:
        return refused
    report = await middleware.health.report()
    body = json.dumps(report.to_json()).encode("utf-8") + b"\n"
    return answer(request, 200 if report.healthy else 503, b"application/json", body)
