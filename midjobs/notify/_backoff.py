"""
When a failed delivery is tried again, and when it is given up.
"""

from __future__ import annotations

import attrs

__all__ = ["BackOff"]


@attrs.frozen
class BackOff:
    """
    Exponential back-off: the first retry C{first} seconds after the first
    attempt, each wait twice the one before up to C{maximum}; a notification
    is given up after C{attempts} attempts, or once an attempt fails more
    than C{give_up_after} seconds after it was queued.
    """

    first: float = 1.0
    maximum: float = 600.0
    attempts: int = 100
    give_up_after: float = 24 * 3600.0

    def delay(self, attempt: int) -> float:
        """
        Seconds between attempt number C{attempt} (from 1) and the next.
        """
        # Capped before it is computed: 2 ** 1000 is no float.
        return min(self.maximum, self.first * 2.0 ** min(attempt - 1, 64))

    def gives_up(self, attempt: int, age: float) -> bool:
        """
        Whether attempt number C{attempt}, failed C{age} seconds after its
        notification was queued, is the last.
        """
        return attempt >= self.attempts or age >= self.give_up_after
