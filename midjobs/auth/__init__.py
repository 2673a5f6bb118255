"""
Authentication on L{twisted.cred}: one L{Portal} for WebSocket and HTTP alike.

Build it with L{make_portal}, then log in with any credentials a checker on it
accepts (C{UsernamePassword}, L{PeerCredentials}, L{TokenCredentials},
L{APIKeyCredentials}); the avatar is an L{IUser}.
More kinds of login are added with C{portal.registerChecker(...)}: a checker
yields an L{AvatarId} and the L{Realm} turns it into a L{User}.
"""

from __future__ import annotations

import os
from typing import Iterable, cast

from twisted.cred.credentials import ICredentials
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred

from midjobs.auth.api_keys import (
    API_KEY,
    APIKeyChecker,
    APIKeyCredentials,
    ApiKeyStore,
    IAPIKey,
    api_key_store_of,
)
from midjobs.auth.avatar import LOGIN_PASSWORD, UNIX_SOCKET, AvatarId, User
from midjobs.auth.checkers import PasswordChecker, PeerCredentialsChecker
from midjobs.auth.credentials import PeerCredentials, peer_credentials
from midjobs.auth.hashing import hash_password, verify_password
from midjobs.auth.interfaces import IPeerCredentials, IUser
from midjobs.auth.realm import Realm
from midjobs.auth.roles import BUILTIN_ROLES, FULL_ADMIN, READONLY_ADMIN
from midjobs.auth.tokens import (
    TOKEN,
    ITokenCredentials,
    ITokenStore,
    InvalidToken,
    Token,
    TokenChecker,
    TokenCredentials,
    TokenStore,
    TooManyTokens,
    origin_of,
    token_store_of,
)
from midjobs.auth.users import UserStore

__all__ = [
    "API_KEY",
    "BUILTIN_ROLES",
    "FULL_ADMIN",
    "LOGIN_PASSWORD",
    "READONLY_ADMIN",
    "TOKEN",
    "UNIX_SOCKET",
    "APIKeyChecker",
    "APIKeyCredentials",
    "ApiKeyStore",
    "AvatarId",
    "IAPIKey",
    "IPeerCredentials",
    "ITokenCredentials",
    "ITokenStore",
    "InvalidToken",
    "IUser",
    "PasswordChecker",
    "PeerCredentials",
    "PeerCredentialsChecker",
    "Realm",
    "Token",
    "TokenChecker",
    "TokenCredentials",
    "TokenStore",
    "TooManyTokens",
    "User",
    "UserStore",
    "api_key_store_of",
    "default_trusted_uids",
    "hash_password",
    "login",
    "make_portal",
    "origin_of",
    "peer_credentials",
    "token_store_of",
    "verify_password",
]


def default_trusted_uids() -> set[int]:
    """
    The UNIX-socket peers trusted without login: root and the daemon's own uid.
    """
    return {0, os.getuid()}


def make_portal(
    users: UserStore,
    trusted_uids: Iterable[int],
    tokens: ITokenStore | None = None,
    api_keys: ApiKeyStore | None = None,
) -> Portal:
    """
    A portal that checks passwords against C{users}, trusts UNIX-socket
    peers whose uid is in C{trusted_uids}, accepts the tokens of C{tokens}
    (an L{ITokenStore}: a new L{TokenStore} if not given; L{token_store_of} finds it) and the
    API keys of C{api_keys} (if not given, a new L{ApiKeyStore} in the
    database of C{users}; L{api_key_store_of} finds it, and its C{setup}
    must run before it is used).
    """
    checkers = [PasswordChecker(users), PeerCredentialsChecker(trusted_uids)]
    checkers.append(TokenChecker(tokens if tokens is not None else TokenStore()))
    checkers.append(APIKeyChecker(api_keys if api_keys is not None else ApiKeyStore(users.pool)))
    return Portal(Realm(users), checkers)


def login(portal: Portal, credentials: ICredentials, mind: object = None) -> Deferred[IUser]:
    """
    Log in and fire with the L{IUser} avatar.

    Fails with L{twisted.cred.error.UnauthorizedLogin} for bad credentials, or
    L{twisted.cred.error.UnhandledCredentials} if no checker takes them.
    """
    d = portal.login(credentials, mind, IUser)
    # The realm answers the interface asked for.
    return d.addCallback(lambda result: cast(IUser, result[1]))
