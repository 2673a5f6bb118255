"""
Answers a download route gives besides the download itself: a short plain
text status, and a connection cut so that a broken transfer cannot pass for
a complete one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["abort_connection", "plain"]


def plain(request: Any, code: int, message: str) -> bytes:
    """
    Answer C{request} with status C{code} and C{message} as plain text.
    """
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    if code == 401:
        request.setHeader(b"WWW-Authenticate", b'Token realm="midjobs"')
    return message.encode("utf-8") + b"\n"


def abort_connection(request: Any) -> None:
    """
    End C{request}'s connection without the end of its answer: what the
    client got so far cannot pass for complete.
    """
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None) or getattr(request, "transport", None)
    if transport is None:
        return
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()
