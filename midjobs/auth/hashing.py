"""
Password hashes: scrypt with a random salt, in a self-describing string.

The encoded form is C{scrypt$<n>$<r>$<p>$<b64 salt>$<b64 hash>}, so the cost
parameters can be raised later without breaking stored hashes.  Both functions
take tens of milliseconds of CPU: call them in a thread, never on the reactor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

__all__ = ["hash_password", "verify_password"]

SCHEME = "scrypt"
N = 2**14
R = 8
P = 1
SALT_BYTES = 16
HASH_BYTES = 32

# Refuse cost parameters far beyond ours, so a tampered hash cannot make a
# login attempt eat the machine.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16
_MAXMEM = 256 * 1024 * 1024


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=_MAXMEM
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """
    Hash C{password} with a fresh 16-byte salt; return the encoded form.
    """
    if not isinstance(password, str):
        raise TypeError("password must be a str")
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, N, R, P, HASH_BYTES)
    return f"{SCHEME}${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """
    Whether C{password} matches the encoded hash; C{False} if it is malformed.
    """
    if not isinstance(password, str) or not isinstance(encoded, str):
        return False
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return False
    if not all(part.isascii() and part.isdigit() for part in parts[1:4]):
        return False
    n, r, p = (int(part) for part in parts[1:4])
    try:
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return False
    if not (1 < n <= _MAX_N and 0 < r <= _MAX_R and 0 < p <= _MAX_P):
        return False
    if not salt or not 16 <= len(expected) <= 128:
        return False
    try:
        actual = _scrypt(password, salt, n, r, p, len(expected))
    except (ValueError, MemoryError):
        # n not a power of two, or parameters the library refuses.
        return False
    return hmac.compare_digest(actual, expected)
