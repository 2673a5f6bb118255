"""
The logins that ended lately: what a login being checked must not outlive.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

__all__ = ["SOURCES", "EndedLogins"]

#: What a login comes from: the L{IUser} attributes that name it.
SOURCES = frozenset({"user_id", "api_key_id", "web_session_id"})


class EndedLogins:
    """
    The users, API keys and web sessions whose logins ended in the last
    C{remember} seconds (the newest C{most} of them).

    A login is checked in steps that wait for the database (its credentials,
    then its user).  One whose user, key or session ends meanwhile would
    complete after the daemon logged out the others; the realm asks here as
    it completes (L{midjobs.auth.Realm}).  Their ids are never given again,
    so what ended stays ended (but a locked user, until it is unlocked):
    remembering it longer than a login takes to be checked costs memory,
    nothing else.
    """

    def __init__(self, remember: float = 600.0, most: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._remember = remember
        self._most = most
        self._clock = clock
        #: When each (source, id) ended, oldest first.
        self._ended: OrderedDict[tuple[str, int], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ended)

    def end(self, source: str, identity: int) -> None:
        """
        The logins from C{identity} (of C{source}, one of L{SOURCES}) ended.
        """
        if source not in SOURCES:
            raise ValueError(f"a login does not come from a {source!r}")
        key = (source, identity)
        self._ended.pop(key, None)
        self._ended[key] = self._clock()
        while len(self._ended) > self._most:
            self._ended.popitem(last=False)

    def forget(self, source: str, identity: int) -> None:
        """
        The logins from C{identity} may complete again (its user was unlocked).
        """
        self._ended.pop((source, identity), None)

    def ended(self, *, user_id: int | None, api_key_id: int | None, web_session_id: int | None) -> bool:
        """
        Whether a login from these ended lately.
        """
        self._forget()
        ended = self._ended
        return (
            (user_id is not None and ("user_id", user_id) in ended)
            or (api_key_id is not None and ("api_key_id", api_key_id) in ended)
            or (web_session_id is not None and ("web_session_id", web_session_id) in ended)
        )

    def _forget(self) -> None:
        oldest = self._clock() - self._remember
        while self._ended:
            key, when = next(iter(self._ended.items()))
            if when >= oldest:
                return
            del self._ended[key]
