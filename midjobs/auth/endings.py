"""
The logins that ended lately: what a login being checked must not outlive.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from twisted.cred.error import UnauthorizedLogin

__all__ = ["SOURCES", "EndedLogins", "LoginEnded"]

#: What a login comes from: the L{IUser} attributes that name it.
SOURCES = ("user_id", "api_key_id", "web_session_id")


class LoginEnded(UnauthorizedLogin):
    """
    The user, API key or web session of a login ended while the login was
    checked: this login fails, nothing more ends because of it.
    """


class EndedLogins:
    """
    The users, API keys and web sessions whose logins ended in the last
    C{remember} seconds (the newest C{most} of each kind).

    A login is checked in steps that wait for the database (its credentials,
    then its user).  One whose user, key or session ends meanwhile would
    complete after the daemon logged out the others; the realm asks here as
    it completes (L{midjobs.auth.Realm}).  Their ids are never given again,
    so what ended stays ended (but a locked user, until it is unlocked):
    remembering it longer than a login takes to be checked costs memory,
    nothing else.  Each kind has room of its own, so that many sessions
    ending at once do not push out a user's deletion.
    """

    def __init__(self, remember: float = 600.0, most: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._remember = remember
        self._most = most
        self._clock = clock
        #: When each id of each kind ended, oldest first.
        self._ended: dict[str, OrderedDict[int, float]] = {source: OrderedDict() for source in SOURCES}

    def __len__(self) -> int:
        return sum(len(ended) for ended in self._ended.values())

    def end(self, source: str, identity: int) -> None:
        """
        The logins from C{identity} (of C{source}, one of L{SOURCES}) ended.
        """
        ended = self._of(source)
        ended.pop(identity, None)
        ended[identity] = self._clock()
        while len(ended) > self._most:
            ended.popitem(last=False)

    def forget(self, source: str, identity: int) -> None:
        """
        The logins from C{identity} may complete again (its user was unlocked).
        """
        self._of(source).pop(identity, None)

    def remembered(self, source: str) -> list[int]:
        """
        The ids of C{source} whose logins ended lately.
        """
        self._forget_old()
        return list(self._of(source))

    def ended(self, *, user_id: int | None, api_key_id: int | None, web_session_id: int | None) -> bool:
        """
        Whether a login from these ended lately.
        """
        self._forget_old()
        return any(
            identity is not None and identity in self._ended[source]
            for source, identity in zip(SOURCES, (user_id, api_key_id, web_session_id))
        )

    def _of(self, source: str) -> OrderedDict[int, float]:
        ended = self._ended.get(source)
        if ended is None:
            raise ValueError(f"a login does not come from a {source!r}")
        return ended

    def _forget_old(self) -> None:
        oldest = self._clock() - self._remember
        for ended in self._ended.values():
            while ended:
                identity, when = next(iter(ended.items()))
                if when >= oldest:
                    break
                del ended[identity]
