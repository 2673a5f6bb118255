"""
How a notification is signed, and how a receiver checks it.

The signed string is the timestamp (whole seconds since the epoch, as sent
in C{X-Midjobs-Timestamp}), a dot, and the body's bytes; the signature is
its HMAC-SHA256 under the webhook's secret, sent as C{X-Midjobs-Signature:
sha256=<hex>}.  A receiver recomputes it over the body it received, compares
in constant time, and refuses timestamps too far from its clock (a captured
request cannot be replayed later); C{X-Midjobs-Delivery} is the same for
every attempt of one notification, so a receiver that has seen it can
answer 2xx and do nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Mapping

__all__ = ["DELIVERY_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign", "signature_headers", "verify"]

SIGNATURE_HEADER = "X-Midjobs-Signature"
TIMESTAMP_HEADER = "X-Midjobs-Timestamp"
DELIVERY_HEADER = "X-Midjobs-Delivery"

#: Seconds a receiver's L{verify} accepts between the timestamp and its clock, by default.
DEFAULT_TOLERANCE = 300


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """
    The value of C{X-Midjobs-Signature} for C{body} sent at C{timestamp}.
    """
    digest = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signature_headers(secret: bytes, timestamp: int, body: bytes, delivery: str) -> dict[str, str]:
    """
    The headers that sign one attempt to deliver C{body}.
    """
    return {
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        TIMESTAMP_HEADER: str(timestamp),
        DELIVERY_HEADER: delivery,
    }


def verify(
    secret: bytes, headers: Mapping[str, str], body: bytes, now: float, tolerance: float = DEFAULT_TOLERANCE
) -> bool:
    """
    Whether C{body} with C{headers} (names as sent) was signed with
    C{secret} at most C{tolerance} seconds from C{now}: what a receiver checks.
    """
    signature, timestamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
    if signature is None or timestamp is None or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(signature, sign(secret, int(timestamp), body))
