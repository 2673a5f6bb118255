"""
The built-in services.
"""

from .auth import AuthService
from .core import CoreService
from .filesystem import FilesystemService
from .system import SystemService
from .user import UserService

#: Every built-in service, in the order the daemon sets them up.
BUILTIN_SERVICES = (CoreService, AuthService, UserService, FilesystemService, SystemService)

__all__ = [
    "BUILTIN_SERVICES",
    "AuthService",
    "CoreService",
    "FilesystemService",
    "SystemService",
    "UserService",
]
