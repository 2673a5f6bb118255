"""
The daemon's loggers, filtered by one configurable level before anything is formatted.

twistd writes every event it is given, debug ones included; a busy daemon
emits one for each job start and end.  Loggers made by L{logger} drop events
below L{set_level}'s level at the source, so that filtered events cost
almost nothing.
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogPublisher,
)

__all__ = ["LEVELS", "logger", "set_level"]

#: The level names the configuration accepts.
LEVELS = {level.name: level for level in LogLevel.iterconstants()}

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(globalLogPublisher, [_predicate])


def logger(namespace: str) -> Logger:
    """
    A logger for the module C{namespace} that honours L{set_level}.
    """
    return Logger(namespace=namespace, observer=_observer)


def set_level(name: str) -> None:
    """
    Emit events of the level C{name} (C{debug}, C{info}, C{warn}, C{error},
    C{critical}) and above.
    """
    _predicate.setLogLevelForNamespace("", LEVELS[name])
