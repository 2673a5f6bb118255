"""
Role names: the built-in ones and the shape every role name must have.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["BUILTIN_ROLES", "FULL_ADMIN", "READONLY_ADMIN", "is_role_name"]

#: May do anything; implies every other role.
FULL_ADMIN: Final = "FULL_ADMIN"
#: May read everything and change nothing.
READONLY_ADMIN: Final = "READONLY_ADMIN"

BUILTIN_ROLES: Final = frozenset({FULL_ADMIN, READONLY_ADMIN})

_ROLE_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def is_role_name(value: object) -> bool:
    """
    Whether C{value} is a well-formed role name (an uppercase identifier).
    """
    return isinstance(value, str) and _ROLE_NAME.fullmatch(value) is not None
