"""
The daemon's loggers, filtered by one configurable level before anything is built.

twistd writes every event it is given, debug ones included, and a busy
daemon emits one for each job start and end.  Loggers made by L{logger} drop
events below L{set_level}'s level before the event is even assembled, so a
filtered event costs one set lookup.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import LogLevel, Logger

__all__ = ["LEVELS", "logger", "set_level"]

#: The level names the configuration accepts, least severe first.
LEVELS = {level.name: level for level in LogLevel.iterconstants()}

_ORDER = list(LEVELS.values())
_enabled: set[LogLevel] = set(_ORDER[_ORDER.index(LogLevel.info) :])


class _LevelledLogger(Logger):
    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        if level in _enabled:
            super().emit(level, format, **kwargs)


def logger(namespace: str) -> Logger:
    """
    A logger for the module C{namespace} that honours L{set_level}.
    """
    return _LevelledLogger(namespace=namespace)


def set_level(name: str) -> None:
    """
    Emit events of the level C{name} (C{debug}, C{info}, C{warn}, C{error},
    C{critical}) and above, from every logger L{logger} made.
    """
    _enabled.clear()
    _enabled.update(_ORDER[_ORDER.index(LEVELS[name]) :])
