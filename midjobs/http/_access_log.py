"""
The access log of every listener, with the secrets of URLs hidden.

twisted.web logs each request in the combined log format, URL included; a
C{/_download} URL carries its token as C{?auth_token=...}.  L{access_log_line}
is that format with the value of every secret query argument replaced.

An argument is secret by its name as the server reads it: decoded
(C{auth%5Ftoken} is C{auth_token}, as C{parse_qs} sees it) and in any case,
so no spelling of a secret's name shows its value.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from twisted.web.http import combinedLogFormatter

from ._typed_request import TypedRequest


__all__ = ["SECRET_ARGUMENTS", "access_log_line", "redact_query"]

#: Names of the query arguments whose values never reach a log.
SECRET_ARGUMENTS = frozenset({b"auth_token", b"token", b"api_key", b"password", b"secret"})
_HIDDEN = b"<hidden>"


def _is_secret(name: bytes) -> bool:
    return unquote_to_bytes(name.replace(b"+", b" ")).strip().lower() in SECRET_ARGUMENTS


def redact_query(uri: bytes) -> bytes:
    """
    C{uri} with the value of each secret query argument (L{SECRET_ARGUMENTS})
    hidden.  Arguments are separated by C{&} and the query runs to the end,
    C{#} included, as C{parse_qs} reads the request's C{args}.
    """
    path, question, query = uri.partition(b"?")
    if not question:
        return uri
    arguments = []
    for argument in query.split(b"&"):
        name, equals, _ = argument.partition(b"=")
        arguments.append(name + b"=" + _HIDDEN if equals and _is_secret(name) else argument)
    return path + b"?" + b"&".join(arguments)


class _RedactedRequest:
    """
    A request as the log formatter reads it: its URI without secrets.
    """

    def __init__(self, request: TypedRequest) -> None:
        self._request = request
        self.uri = redact_query(request.uri)

    def __getattr__(self, name: str) -> object:
        return getattr(self._request, name)


def access_log_line(timestamp: str, request: TypedRequest) -> str:
    """
    The combined-log-format line of C{request}, for C{Site(logFormatter=...)}.
    """
    line: str = combinedLogFormatter(timestamp, _RedactedRequest(request))
    return line
