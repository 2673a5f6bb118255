"""
The built-in services.
"""

from .auth import AuthService
from .core import CoreService
from .user import UserService

#: Every built-in service, in the order the daemon sets them up.
BUILTIN_SERVICES = (CoreService, AuthService, UserService)

__all__ = ["BUILTIN_SERVICES", "AuthService", "CoreService", "UserService"]
