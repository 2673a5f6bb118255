"""
The built-in services.
"""

from .api_key import ApiKeyService
from .auth import AuthService
from .cluster import ClusterService
from .config import ConfigService
from .core import CoreService
from .filesystem import FilesystemService
from .system import SystemService
from .user import UserService

#: Every built-in service, in the order the daemon sets them up.
BUILTIN_SERVICES = (
    CoreService, AuthService, UserService, ApiKeyService, FilesystemService, SystemService, ConfigService, ClusterService
)

__all__ = [
    "BUILTIN_SERVICES",
    "ApiKeyService",
    "AuthService",
    "ClusterService",
    "ConfigService",
    "CoreService",
    "FilesystemService",
    "SystemService",
    "UserService",
]
