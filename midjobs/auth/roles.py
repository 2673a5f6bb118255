"""
Role names: the built-in ones and the shape every role name must have.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["BUILTIN_ROLES", "FULL_ADMIN", "METRICS_READ", "READONLY_ADMIN", "is_role_name"]

#: May do anything; implies every other role.
FULL_ADMIN: Final = "FULL_ADMIN"
#: May read everything and change nothing.
READONLY_ADMIN: Final = "READONLY_ADMIN"

#: May read C{/metrics} and nothing else: the role of Prometheus's API key.
METRICS_READ: Final = "METRICS_READ"

BUILTIN_ROLES: Final = frozenset({FULL_ADMIN, READONLY_ADMIN, METRICS_READ})

_ROLE_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def is_role_name(value: object) -> bool:
    """
    Whether C{value} is a well-formed role name (an uppercase identifier).
    """
    return isinstance(value, str) and _ROLE_NAME.fullmatch(value) is not None
