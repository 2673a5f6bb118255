# twisted.web.iweb.IRequest is unannotated.
# mypy: allow-untyped-calls
"""
The security headers on every response of the site (their values:
L{midjobs.security_headers}).

They are set in one place, L{add_security_headers}, called by the site's
request class just before a response's headers go out (see
L{midjobs.http._request.SiteRequest}).
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from ..security_headers import is_api_path, security_headers

__all__ = ["add_security_headers"]


def add_security_headers(request: IRequest) -> None:
    """
    Set the security headers on a twisted.web C{request} whose response has
    not started, leaving alone any of them the resource set itself.
    """
    path = getattr(request, "path", None) or b""
    headers = request.responseHeaders
    for name, value in security_headers(request.isSecure(), is_api_path(path)):
        if not headers.hasHeader(name):
            headers.setRawHeaders(name, [value])
