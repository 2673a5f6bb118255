"""
Failed logins, counted per source address and per user name.

After L{LoginThrottle.limit} failures within L{LoginThrottle.window} seconds
for one key, further attempts for that key fail at once, without their
secret being checked, until L{LoginThrottle.cooldown} seconds after the last
failure.  Time is the reactor's clock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Iterable

__all__ = ["LoginThrottle"]

#: A key failures are counted under: C{("source", host)} or C{("user", name)}.
Key = tuple[str, str]


class LoginThrottle:
    """
    Counts failed logins and says when a key must wait.

    @ivar limit: failures within C{window} that make a key wait.
    @ivar window: seconds over which failures are counted.
    @ivar cooldown: seconds a key waits after its last failure once it
        reached C{limit}.
    @ivar max_keys: most keys remembered; the longest unused are forgotten
        first, so a flood of names or addresses cannot fill the memory.
    """

    def __init__(
        self,
        clock: Any,
        *,
        limit: int = 5,
        window: float = 60.0,
        cooldown: float = 60.0,
        max_keys: int = 100_000,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.cooldown = cooldown
        self.max_keys = max_keys
        self._failures: OrderedDict[Key, deque[float]] = OrderedDict()

    def wait(self, keys: Iterable[Key]) -> float:
        """
        Seconds until C{keys} may try again; C{0} if they may now.
        """
        now = self.clock.seconds()
        longest = 0.0
        for key in keys:
            failures = self._failures.get(key)
            if failures is None or len(failures) < self.limit:
                continue
            # Limit reached: was it within one window, and is the cool-down on?
            if failures[-1] - failures[0] <= self.window:
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
                failures = deque(maxlen=self.limit)
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
