"""
The access log of every listener, with the secrets of URLs hidden.

twisted.web logs each request in the combined log format, URL included; a
C{/_download} URL carries its token as C{?auth_token=...}.  L{access_log_line}
is that format with the value of every C{auth_token} argument replaced.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.web.http import combinedLogFormatter

__all__ = ["access_log_line", "redact_query"]

_SECRET_ARGUMENT = re.compile(rb"(?<=[?&]auth_token=)[^&#]*")
_HIDDEN = b"<hidden>"


def redact_query(uri: bytes) -> bytes:
    """
    C{uri} with the value of each C{auth_token} query argument hidden.
    """
    return _SECRET_ARGUMENT.sub(_HIDDEN, uri)


class _RedactedRequest:
    """
    A request as the log formatter reads it: its URI without secrets.
    """

    def __init__(self, request: Any) -> None:
        self._request = request
        self.uri = redact_query(request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def access_log_line(timestamp: str, request: Any) -> str:
    """
    The combined-log-format line of C{request}, for C{Site(logFormatter=...)}.
    """
    return combinedLogFormatter(timestamp, _RedactedRequest(request))
