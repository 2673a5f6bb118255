"""
Who is calling an HTTP route: credentials read from the request, checked by the portal.

C{docs/protocol.rst} ("POST /_upload") allows C{Authorization: Basic} (a username and password),
C{Authorization: Bearer <api key>}, C{Authorization: Token <token>} and the
query argument C{?auth_token=<token>}.  L{authenticate} is the one entry
point: it reads whichever the request carries and logs in through the same
L{twisted.cred} portal as the WebSocket.  On the UNIX socket, a request
without credentials is tried as its peer (L{PeerCredentials}), so local
trust works over HTTP as it does for C{midclt}.

Tokens are L{midjobs.auth.tokens.TokenCredentials} for a login (bound to no
job), checked with the request's origin.  API keys are
L{midjobs.auth.api_keys.APIKeyCredentials}, naming no user.  Credentials
no checker on the portal handles answer L{UnhandledCredentials}, which is a
401 like any other failed login.
"""

from __future__ import annotations

import binascii
from base64 import b64decode

from twisted.cred.credentials import ICredentials, UsernamePassword
from twisted.cred.error import LoginFailed, UnauthorizedLogin, UnhandledCredentials

from ..auth import peer_credentials
from ..auth.gate import LoginGate, LoginThrottled
from ..auth.interfaces import IUser
from ..auth.api_keys import APIKeyCredentials, IAPIKey
from ..auth.tokens import TokenCredentials, origin_of
from ._typed_request import TypedRequest

__all__ = [
    "APIKeyCredentials",
    "AuthenticationFailed",
    "IAPIKey",
    "authenticate",
    "credentials_from",
]


class AuthenticationFailed(Exception):
    """
    The request carries no usable credentials, or the portal refused them:
    the answer is 401.  The message says which, never why a secret was wrong.
    """


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthenticationFailed(f"The {what} is not UTF-8") from None


def _basic(value: bytes) -> UsernamePassword:
    try:
        decoded = b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationFailed("Malformed Basic credentials: not base64") from None
    text = _text(decoded, "Basic user and password")
    username, colon, password = text.partition(":")
    if not colon:
        raise AuthenticationFailed("Malformed Basic credentials: no ':' between user and password")
    return UsernamePassword(username.encode("utf-8"), password.encode("utf-8"))


def credentials_from(request: TypedRequest) -> ICredentials | None:
    """
    The credentials C{request} carries, or L{None} if it carries none.

    The C{Authorization} header wins over the C{auth_token} query argument.
    A token is a login token (bound to no job), from the request's origin.

    @raise AuthenticationFailed: a header or argument is there but malformed,
        or names a scheme C{docs/protocol.rst} ("POST /_upload") does not know.
    """
    header = request.requestHeaders.getRawHeaders(b"Authorization")
    if header:
        if len(header) > 1:
            raise AuthenticationFailed("More than one Authorization header")
        scheme, _, value = header[0].strip().partition(b" ")
        value = value.strip()
        scheme = scheme.lower()
        if scheme not in (b"basic", b"bearer", b"token"):
            raise AuthenticationFailed("Unsupported Authorization scheme: use Basic, Bearer or Token")
        if not value:
            raise AuthenticationFailed(f"Empty {scheme.decode().title()} credentials")
        if scheme == b"basic":
            return _basic(value)
        if scheme == b"bearer":
            return APIKeyCredentials(_text(value, "API key"))
        return _token(_text(value, "token"), request)
    tokens = (request.args or {}).get(b"auth_token")
    if tokens:
        if len(tokens) > 1 or not tokens[0]:
            raise AuthenticationFailed("Give one non-empty auth_token")
        return _token(_text(tokens[0], "auth_token"), request)
    return None


def _token(token: str, request: TypedRequest) -> TokenCredentials:
    return TokenCredentials(token, origin=origin_of(request.getClientAddress()))


async def authenticate(logins: LoginGate | None, request: TypedRequest) -> IUser:
    """
    Log the caller of C{request} in through C{logins} and return the
    L{midjobs.auth.IUser} avatar.

    Needs only what is known once the headers are in: C{requestHeaders},
    C{args} (the query) and C{channel.transport} (for a UNIX-socket peer).

    @raise AuthenticationFailed: no credentials, malformed ones, or ones the
        portal refused or has no checker for.
    """
    credentials = credentials_from(request)
    from_peer = credentials is None
    if credentials is None:
        channel = getattr(request, "channel", None)
        credentials = peer_credentials(getattr(channel, "transport", None))
        if credentials is None:
            raise AuthenticationFailed("Authentication required")
    if logins is None:
        raise AuthenticationFailed("This daemon accepts no logins")
    try:
        return await logins.login(credentials, origin_of(request.getClientAddress()), "HTTP login")
    except LoginThrottled as e:
        raise AuthenticationFailed(str(e)) from None
    except UnhandledCredentials:
        raise AuthenticationFailed("This kind of credentials is not accepted here") from None
    except (UnauthorizedLogin, LoginFailed):
        raise AuthenticationFailed("Authentication required" if from_peer else "Invalid credentials") from None
