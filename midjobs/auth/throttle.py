"""
Failed logins, counted per source address and per (source address, user name).

After L{LoginThrottle.limit} failures within L{LoginThrottle.window} seconds
for one user name from one source (or L{LoginThrottle.source_limit} failures
from one source, whatever the names), further attempts for that key fail at
once, without their secret being checked, until L{LoginThrottle.cooldown}
seconds after the last failure.  Time is the reactor's clock.

No key is a user name alone: failures from one address never make a user
wait at another, so nobody can lock a user out by failing on purpose.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Iterable

from twisted.internet.interfaces import IReactorTime

__all__ = ["Key", "LoginThrottle", "SOURCE_FACTOR", "source_key", "user_key"]

#: A key failures are counted under: C{("source", host)} (L{source_key}) or
#: C{("user", host, name)} (L{user_key}).
Key = tuple[str, ...]

#: A source waits after this many times L{LoginThrottle.limit} failures in
#: all: people sharing an address (an office behind one NAT) may mistype a
#: few passwords each before the address as a whole must wait.
SOURCE_FACTOR = 4


def source_key(source: str) -> Key:
    """
    The key of every login from C{source}.
    """
    return ("source", source)


def user_key(source: str, username: str) -> Key:
    """
    The key of the logins for C{username} from C{source}.
    """
    return ("user", source, username)


class LoginThrottle:
    """
    Counts failed logins and says when a key must wait.

    @ivar limit: failures within C{window} that make a C{("user", ...)} key
        (and any key but a source) wait.
    @ivar source_factor: a C{("source", ...)} key waits after
        C{limit * source_factor} failures (L{source_limit}).
    @ivar window: seconds over which failures are counted.
    @ivar cooldown: seconds a key waits after its last failure once it
        reached its limit.
    @ivar max_keys: most keys remembered; the longest unused are forgotten
        first, so a flood of names or addresses cannot fill the memory.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        limit: int = 5,
        window: float = 60.0,
        cooldown: float = 60.0,
        source_factor: int = SOURCE_FACTOR,
        max_keys: int = 100_000,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.source_factor = source_factor
        self.window = window
        self.cooldown = cooldown
        self.max_keys = max_keys
        self._failures: OrderedDict[Key, deque[float]] = OrderedDict()

    @property
    def source_limit(self) -> int:
        """
        Failures within C{window} that make a source wait.
        """
        return self.limit * self.source_factor

    def _limit_of(self, key: Key) -> int:
        return self.source_limit if key[0] == "source" else self.limit

    def wait(self, keys: Iterable[Key]) -> float:
        """
        Seconds until C{keys} may try again; C{0} if they may now.
        """
        now = self.clock.seconds()
        longest = 0.0
        for key in keys:
            failures = self._failures.get(key)
            limit = self._limit_of(key)
            if failures is None or len(failures) < limit:
                continue
            # Limit reached: was it within one window, and is the cool-down on?
            if failures[-1] - failures[-limit] <= self.window:
                longest = max(longest, failures[-1] + self.cooldown - now)
        return max(longest, 0.0)

    def failed(self, keys: Iterable[Key]) -> None:
        """
        Count one failed login against each of C{keys}.
        """
        now = self.clock.seconds()
        for key in keys:
            failures = self._failures.pop(key, None)
            if failures is None:
                failures = deque(maxlen=self._limit_of(key))
            failures.append(now)
            self._failures[key] = failures
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        self._forget_before(now - max(self.window, self.cooldown))

    def _forget_before(self, oldest: float) -> None:
        # Keys are in order of their last failure: stop at the first recent one.
        while self._failures:
            key, failures = next(iter(self._failures.items()))
            if failures[-1] >= oldest:
                return
            del self._failures[key]
