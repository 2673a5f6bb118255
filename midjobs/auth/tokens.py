"""
Short-lived tokens: a secret that stands for a logged-in user for a while.

An L{ITokenStore} hands out random tokens (C{auth.generate_token}, the URL of
C{core.download}) and remembers whose they are, until when, and what they may
be used for: L{TokenStore} in memory for one daemon,
L{midjobs.auth.pg_tokens.PgTokenStore} in the database a cluster shares.
Every operation returns a L{Deferred}.  A token is presented as L{TokenCredentials} to the
portal, where the L{TokenChecker} vouches for its user with an L{AvatarId} of
kind L{TOKEN}; the realm then gives that user's current roles.

A token remembers the identity it came from (the user's stable id, the API key
where the login was by key, and the web session whose cookie it was traded for,
through any chain of tokens made from tokens): deleting the user or the key, or
the session's end, revokes it (L{TokenStore.revoke_derived}).  One
identity holds at most L{TokenStore.max_per_user} live tokens; past that,
L{ITokenStore.create} fails with L{TooManyTokens} and evicts nothing.

In L{TokenStore}, expiry follows the reactor's clock.  Nothing is scheduled:
expired tokens are pruned whenever the store is used, so a store never leaves
a pending call.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import secrets
from typing import Any, Final, Mapping

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from midjobs.auth.avatar import UNIX_SOCKET, AvatarId
from midjobs.auth.endings import SOURCES
from midjobs.auth.interfaces import IUser
from midjobs.errors import CallError
from midjobs.counts import NO_COUNTS, ICounts

__all__ = [
    "MAX_TOKEN_LENGTH",
    "TOKEN",
    "ITokenCredentials",
    "ITokenStore",
    "InvalidToken",
    "Token",
    "TokenAvatarId",
    "TokenChecker",
    "TokenCredentials",
    "TokenStore",
    "TooManyTokens",
    "check_scope",
    "derived_from",
    "origin_of",
    "token_store_of",
]

#: Logged in with a token.
TOKEN: Final = "TOKEN"

#: Longest token string looked at; a real one is 43 characters.
MAX_TOKEN_LENGTH: Final = 256

#: Live tokens one identity may hold, unless the store is told otherwise
#: (C{[limits] tokens_per_user}).
MAX_TOKENS_PER_USER: Final = 1000


class InvalidToken(Exception):
    """
    The token is unknown, expired, used up, or presented out of its scope.
    """


class TooManyTokens(CallError):
    """
    The user holds as many live tokens as one identity may (errno C{EBUSY}).
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Too many live tokens: a user may hold {limit}; log out or let some expire first",
            errno.EBUSY,
        )


def origin_of(address: object) -> str:
    """
    Where a connection comes from, as a token remembers it: the peer's host
    for TCP, C{"unix"} for a UNIX socket.
    """
    host = getattr(address, "host", None)
    if isinstance(host, str):
        return host
    if type(address).__name__ == "UNIXAddress":
        return "unix"
    return repr(address)


@attrs.frozen
class Token:
    """
    What the store knows of one token.

    @ivar user: the L{IUser} avatar the token was made for; its C{user_id},
        C{api_key_id} and C{web_session_id} are the identity the token derives from.
    @ivar expires: the time at which it stops being valid, by the clock of its
        store (the reactor's for L{TokenStore}, the database's for a cluster).
    @ivar attributes: what its creator attached (a JSON-ready dict).
    @ivar single_use: the first use removes it.
    @ivar job_id: the one job download it is for, or L{None} for a login token.
    @ivar origin: the only origin (L{origin_of}) it may come from, or L{None}.
    """

    value: str = attrs.field(repr=False)
    user: IUser
    expires: float
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    single_use: bool = False
    job_id: int | None = None
    origin: str | None = None


def check_scope(token: Token | None, *, job_id: int | None, origin: str | None) -> Token:
    """
    C{token} (a live token, or L{None}) if it may be used for C{job_id}
    (L{None}: a login) from C{origin}.

    @raise InvalidToken: it may not.
    """
    if token is None:
        raise InvalidToken("Invalid or expired token")
    if token.job_id != job_id:
        raise InvalidToken("The token is not for this use")
    if token.origin is not None and token.origin != origin:
        raise InvalidToken("The token is not valid from this origin")
    return token


class ITokenStore(Interface):
    """
    Where the live tokens are kept: every operation answers with a
    L{Deferred}, so a store may be in memory or in a database that several
    daemons share.  A failure is L{InvalidToken} or L{TooManyTokens} as
    documented; misuse (a bad argument) raises at once.
    """

    max_per_user = Attribute(
        "The live tokens (C{int}) one identity (a stored user's id, or the trusted "
        "local peer) may hold at once, those of downloads included: C{[limits] tokens_per_user}."
    )
    counts = Attribute(
        "The L{ICounts} where refusals are counted (C{limit_hit('tokens_per_user')})."
    )

    def create(
        user: IUser,
        ttl: float,
        *,
        attrs: Mapping[str, Any] | None = None,
        single_use: bool = False,
        job_id: int | None = None,
        match_origin: str | None = None,
    ) -> Deferred[str]:
        """
        A new token for C{user}, valid for C{ttl} seconds.

        @param attrs: attributes to keep with the token (JSON-ready).
        @param single_use: the first successful use removes it.
        @param job_id: bind it to downloading this job's output; such a token
            is good for nothing else (not for a login).
        @param match_origin: accept it only from this origin (L{origin_of}).
        @raise ValueError: at once, if C{ttl} is not positive.
        @return: fires with the token, or fails with L{TooManyTokens} if
            C{user} already holds L{max_per_user} live tokens.
        """

    def lookup(value: str) -> Deferred[Token | None]:
        """
        The live token C{value}, whatever its scope, or L{None}.  Does not use it.
        """

    def check(value: str, *, job_id: int | None = None, origin: str | None = None) -> Deferred[Token]:
        """
        The token C{value}, if it may be used for C{job_id} (L{None}: a
        login) from C{origin} (L{check_scope}); else fails with
        L{InvalidToken}.  Does not use it.
        """

    def consume(value: str, *, job_id: int | None = None, origin: str | None = None) -> Deferred[Token]:
        """
        L{check} the token and use it: a single-use token is removed, so of
        two uses at the same time (on any daemon sharing the store) exactly
        one succeeds.  Fails with L{InvalidToken} if it may not be used so.
        """

    def revoke(value: str) -> Deferred[bool]:
        """
        Forget the token C{value}; whether it was there.
        """

    def revoke_derived(
        *, user_id: int | None = None, api_key_id: int | None = None, web_session_id: int | None = None
    ) -> Deferred[int]:
        """
        Forget every token derived from the stored user C{user_id}, the API
        key C{api_key_id} or the web session C{web_session_id} (the one that
        is given): those made for them, and those made by logins with such
        tokens.  How many live ones there were.

        @raise ValueError: at once, unless exactly one is given.
        """

    def count_of(user_id: int | None) -> Deferred[int]:
        """
        How many live tokens the identity C{user_id} holds (L{None}: the
        trusted local peer).
        """


@implementer(ITokenStore)
class TokenStore:
    """
    The live tokens of one daemon, in memory.  Every answer is already
    there when its L{Deferred} is returned.

    @ivar clock: an L{IReactorTime} whose C{seconds()} is the time tokens
        expire by (the reactor; a C{task.Clock} in tests).
    @ivar max_per_user: see L{ITokenStore.max_per_user}; the middleware sets
        it from C{[limits] tokens_per_user}.
    """

    def __init__(self, clock: IReactorTime | None = None, *, max_per_user: int = MAX_TOKENS_PER_USER) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.clock = clock
        self.max_per_user = max_per_user
        #: Where refusals are counted (the daemon's metrics).
        self.counts: ICounts = NO_COUNTS
        self._tokens: dict[str, Token] = {}
        #: The live tokens of each identity (L{Token.user}'s C{user_id}).
        self._by_user: dict[int | None, set[str]] = {}
        self._expiries: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()

    def __len__(self) -> int:
        self._prune()
        return len(self._tokens)

    def create(
        self,
        user: IUser,
        ttl: float,
        *,
        attrs: Mapping[str, Any] | None = None,
        single_use: bool = False,
        job_id: int | None = None,
        match_origin: str | None = None,
    ) -> Deferred[str]:
        if not ttl > 0:
            raise ValueError("A token needs a positive time to live")
        self._prune()
        owned = self._by_user.setdefault(user.user_id, set())
        if len(owned) >= self.max_per_user:
            if not owned:
                del self._by_user[user.user_id]
            self.counts.limit_hit("tokens_per_user")
            return fail(TooManyTokens(self.max_per_user))
        value = secrets.token_urlsafe(32)
        expires = self.clock.seconds() + ttl
        self._tokens[value] = Token(
            value=value,
            user=user,
            expires=expires,
            attributes=dict(attrs or {}),
            single_use=single_use,
            job_id=job_id,
            origin=match_origin,
        )
        owned.add(value)
        heapq.heappush(self._expiries, (expires, next(self._sequence), value))
        return succeed(value)

    def count_of(self, user_id: int | None) -> Deferred[int]:
        self._prune()
        return succeed(len(self._by_user.get(user_id, ())))

    def lookup(self, value: str) -> Deferred[Token | None]:
        return succeed(self._live(value))

    def check(self, value: str, *, job_id: int | None = None, origin: str | None = None) -> Deferred[Token]:
        try:
            return succeed(check_scope(self._live(value), job_id=job_id, origin=origin))
        except InvalidToken as e:
            return fail(e)

    def consume(self, value: str, *, job_id: int | None = None, origin: str | None = None) -> Deferred[Token]:
        try:
            token = check_scope(self._live(value), job_id=job_id, origin=origin)
        except InvalidToken as e:
            return fail(e)
        if token.single_use:
            self._remove(value)
        return succeed(token)

    def revoke(self, value: str) -> Deferred[bool]:
        return succeed(isinstance(value, str) and self._remove(value))

    def revoke_derived(
        self, *, user_id: int | None = None, api_key_id: int | None = None, web_session_id: int | None = None
    ) -> Deferred[int]:
        name, identity = derived_from(user_id=user_id, api_key_id=api_key_id, web_session_id=web_session_id)
        self._prune()
        if name == "user_id":
            values = list(self._by_user.get(identity, ()))
        else:
            values = [v for v, token in self._tokens.items() if getattr(token.user, name) == identity]
        for value in values:
            self._remove(value)
        return succeed(len(values))

    def _live(self, value: object) -> Token | None:
        self._prune()
        if not isinstance(value, str) or len(value) > MAX_TOKEN_LENGTH:
            return None
        return self._tokens.get(value)

    def _remove(self, value: str) -> bool:
        token = self._tokens.pop(value, None)
        if token is None:
            return False
        owned = self._by_user.get(token.user.user_id)
        if owned is not None:
            owned.discard(value)
            if not owned:
                del self._by_user[token.user.user_id]
        return True

    def _prune(self) -> None:
        now = self.clock.seconds()
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, _, value = heapq.heappop(expiries)
            token = self._tokens.get(value)
            if token is not None and token.expires <= now:
                self._remove(value)


def derived_from(
    *, user_id: int | None = None, api_key_id: int | None = None, web_session_id: int | None = None
) -> tuple[str, int]:
    """
    The one identity given to L{ITokenStore.revoke_derived}: the name of the
    L{IUser} attribute that holds it (C{"user_id"}, C{"api_key_id"} or
    C{"web_session_id"}), and its value.

    @raise ValueError: unless exactly one is given.
    """
    given = [(name, value) for name, value in zip(SOURCES, (user_id, api_key_id, web_session_id)) if value is not None]
    if len(given) != 1:
        raise ValueError("Give one of a user id, an API key id and a web session id")
    return given[0]


class ITokenCredentials(ICredentials):
    """
    A token from an L{ITokenStore}, presented for a login or for one download.
    """

    token = Attribute("The token string.")
    job_id = Attribute(
        "The job whose download the token is presented for (C{int}), or C{None} "
        "for a login.  A token made for one of them is refused for the other."
    )
    origin = Attribute(
        "Where the request comes from (L{origin_of}), or C{None} if unknown; "
        "checked against a token made with C{match_origin}."
    )


@implementer(ITokenCredentials)
@attrs.frozen
class TokenCredentials:
    token: str = attrs.field(repr=False)
    job_id: int | None = None
    origin: str | None = None


@attrs.frozen
class TokenAvatarId(AvatarId):
    """
    The avatar id of a token login: the token's user, and whether that user was
    a trusted UNIX-socket peer (whose rights come from the socket, not the store).
    """

    trusted_peer: bool = False


@implementer(ICredentialsChecker)
class TokenChecker:
    """
    Accepts a live token used within its scope, and uses it up if single-use.

    @ivar store: the L{ITokenStore} it checks against.
    """

    credentialInterfaces = (ITokenCredentials,)

    def __init__(self, store: ITokenStore) -> None:
        self.store = store

    def requestAvatarId(self, credentials: ITokenCredentials) -> Deferred[AvatarId]:  # type: ignore[override]  # twisted.cred's annotations say an avatar id is bytes; any value goes
        consumed = self.store.consume(
            credentials.token,
            job_id=getattr(credentials, "job_id", None),
            origin=getattr(credentials, "origin", None),
        )
        return consumed.addCallbacks(_avatar_id, _unauthorized)


def _avatar_id(token: Token) -> AvatarId:
    user = token.user
    trusted_peer = user.credentials_type == UNIX_SOCKET or user.local_peer
    return TokenAvatarId(
        user.username,
        TOKEN,
        trusted_peer=trusted_peer,
        user_id=user.user_id,
        api_key_id=user.api_key_id,
        web_session_id=user.web_session_id,
    )


def _unauthorized(failure: Failure) -> Failure:
    if isinstance(failure.value, InvalidToken):
        raise UnauthorizedLogin(str(failure.value))
    return failure


def token_store_of(portal: object) -> ITokenStore | None:
    """
    The store of the L{TokenChecker} registered on C{portal}, if there is one.
    """
    checker = getattr(portal, "checkers", {}).get(ITokenCredentials)
    return checker.store if isinstance(checker, TokenChecker) else None
