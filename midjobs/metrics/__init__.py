"""
What the daemon measures, for Prometheus: see C{docs/operations.rst}.
"""

from ..counts import LIMITS, NO_COUNTS, ICounts, NoCounts
from ._lag import ReactorLag
from ._metrics import OUTCOMES, TRANSPORTS, UNKNOWN_METHOD, Metrics, lock_label

__all__ = [
    "ICounts",
    "LIMITS",
    "Metrics",
    "NO_COUNTS",
    "NoCounts",
    "OUTCOMES",
    "ReactorLag",
    "TRANSPORTS",
    "UNKNOWN_METHOD",
    "lock_label",
]
