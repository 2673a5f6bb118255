"""
The built-in services.
"""

from .api_key import ApiKeyService
from .auth import AuthService
from .config import ConfigService
from .core import CoreService
from .filesystem import FilesystemService
from .system import SystemService
from .user import UserService

#: Every built-in service, in the order the daemon sets them up.
BUILTIN_SERVICES = (CoreService, AuthService, UserService, ApiKeyService, FilesystemService, SystemService, ConfigService)

__all__ = [
    "BUILTIN_SERVICES",
    "ApiKeyService",
    "AuthService",
    "ConfigService",
    "CoreService",
    "FilesystemService",
    "SystemService",
    "UserService",
]
