"""
The daemon's loggers, filtered by one configurable level before anything is
built, and the observers that write its log as text, JSON or for the journal.

twistd writes every event it is given, debug ones included, and a busy
daemon emits one for each job start and end.  Loggers made by L{logger} drop
events below L{set_level}'s level before the event is even assembled, so a
filtered event costs one set lookup.

twistd starts its log with the observer of a factory named by its
C{--logger} option, or else its own text file.  C{twistd midjobs} names
L{observer} when the log is JSON (C{--log-format json}) or goes to the
systemd journal, after saying where with L{log_to}.
"""

from __future__ import annotations

import enum
import io
import json
import logging
import os
import signal
import sys
from typing import IO, Mapping, cast

import attrs
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    Logger,
    eventAsText,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile

__all__ = [
    "LEVELS",
    "LogDestination",
    "StdlibBridge",
    "format_journal_line",
    "format_json_line",
    "log_to",
    "logger",
    "observer",
    "set_level",
    "writes_to_journal",
]

#: The level names the configuration accepts, least severe first.
LEVELS = {level.name: level for level in LogLevel.iterconstants()}

_ORDER = list(LEVELS.values())
_enabled: set[LogLevel] = set(_ORDER[_ORDER.index(LogLevel.info) :])


class _LevelledLogger(Logger):
    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
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
    # Python's logging drops what would be filtered out here before it is formatted.
    logging.getLogger().setLevel(_STDLIB_LEVELS[LEVELS[name]])


#: The level of Python's L{logging} for each of twisted.logger's.
_STDLIB_LEVELS = {
    LogLevel.debug: logging.DEBUG,
    LogLevel.info: logging.INFO,
    LogLevel.warn: logging.WARNING,
    LogLevel.error: logging.ERROR,
    LogLevel.critical: logging.CRITICAL,
}


class StdlibBridge(logging.Handler):
    """
    Hands the records of Python's L{logging} to twisted.logger, so that what
    a service logs with C{self.logger} or C{logging.getLogger(__name__)} (as
    plugins of the original do) reaches the daemon's log, at its level, in
    its format.  L{install} puts it on the root logger.
    """

    def emit(self, record: logging.LogRecord) -> None:
        level = next(
            (twisted for twisted, stdlib in reversed(_STDLIB_LEVELS.items()) if record.levelno >= stdlib),
            LogLevel.debug,
        )
        log = logger(record.name)
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            _, error, traceback = record.exc_info
            failure = Failure(error, type(error), traceback)  # type: ignore[no-untyped-call]  # not annotated in Twisted
            log.failure("{message}", failure, level, message=message)
        else:
            log.emit(level, "{message}", message=message)

    @classmethod
    def install(cls) -> StdlibBridge:
        """
        Put a bridge on the root logger; remove it with L{uninstall}.
        """
        bridge = cls()
        root = logging.getLogger()
        root.addHandler(bridge)
        root.setLevel(min(_STDLIB_LEVELS[level] for level in _enabled))
        return bridge

    def uninstall(self) -> None:
        logging.getLogger().removeHandler(self)


# Where and how the log is written: twistd's log observer.

#: The syslog priority (sd-daemon(3)'s C{<N>} prefix) of each level.
_PRIORITIES = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}


def _priority(event: LogEvent) -> int:
    return _PRIORITIES.get(event.get("log_level"), 6)


def format_journal_line(event: LogEvent) -> str | None:
    """
    C{event} as text for the journal: no time (the journal stamps each line
    itself) and every line prefixed with its syslog priority (C{<6>} for
    info, C{<4>} for warn...), which journald strips and keeps as the
    entry's priority, so C{journalctl -p warning} works.
    """
    text = eventAsText(event, includeTimestamp=False, includeSystem=True)
    if not text:
        return None
    prefix = f"<{_priority(event)}>"
    return "".join(f"{prefix}{line}\n" for line in text.splitlines())


def _json_value(value: object) -> str | int:
    # What JSON has no type for is written as text, not dropped.
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, enum.Enum) and isinstance(value.value, (str, int)):
        return value.value
    return str(value)


#: Event keys that name objects of the process, not facts about the event.
_NOT_WRITTEN = frozenset({"log_logger", "log_source", "log_trace", "log_io", "log_flattened"})


def format_json_line(event: LogEvent) -> str:
    """
    C{event} as one line of JSON, as L{twisted.logger.eventAsJSON} writes
    it, but for people and log shippers rather than for Twisted to read
    back: its structured fields (C{job_id}, C{method}, C{username},
    C{address}...) are keys beside Twisted's C{log_time},
    C{log_namespace}, C{log_format} and C{log_level} (its name, as
    C{"info"}), and C{log_text} is the message as text, with the traceback
    of a failure (C{log_failure} then names the exception).

    Values JSON has no type for are written as their text (an address as
    C{IPv4Address(type='TCP', host=..., port=...)}, a job state as its
    name) where C{eventAsJSON} writes C{{"unpersistable": true}}.
    """
    level = event.get("log_level")
    name = getattr(level, "name", None)
    record = {
        "log_time": event.get("log_time"),
        "log_level": name if isinstance(name, str) and LEVELS.get(name) is level else level,
        "log_namespace": event.get("log_namespace"),
        "log_text": eventAsText(event, includeTimestamp=False, includeSystem=False),
    }
    record.update((key, value) for key, value in event.items() if key not in record and key not in _NOT_WRITTEN)
    failure = event.get("log_failure")
    if isinstance(failure, Failure) and failure.type is not None:
        record["log_failure"] = f"{failure.type.__qualname__}: {failure.getErrorMessage()}"
    try:
        return json.dumps(record, default=_json_value, skipkeys=True, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as e:  # a field that refers to itself, or another oddity
        fallback = {key: record[key] for key in ("log_time", "log_level", "log_namespace", "log_text") if key in record}
        return json.dumps({**fallback, "log_json_error": str(e)}, default=str, ensure_ascii=False) + "\n"


@attrs.frozen
class LogDestination:
    """
    How the daemon's log is written, as its options and environment say.

    @ivar format: C{"text"} or C{"json"}.
    @ivar journal: whether the log goes to the systemd journal (standard
        output is C{$JOURNAL_STREAM}): lines then carry their priority,
        and text lines no time.
    @ivar path: the log file, or L{None} for standard output.
    """

    format: str = "text"
    journal: bool = False
    path: str | None = None

    def observer(self) -> ILogObserver:
        """
        An observer that writes the log here.
        """
        if self.path is None:
            out: IO[str] = sys.stdout
        else:
            log_file: LogFile = LogFile.fromFullPath(self.path)  # type: ignore[no-untyped-call]  # not annotated in Twisted
            # A LogFile has what a file observer uses (write, flush), though it is no IO.
            out = cast(IO[str], _rotated_by_sigusr1(log_file))
        if self.format == "json":
            if self.journal:
                return FileLogObserver(out, lambda event: f"<{_priority(event)}>{format_json_line(event)}")
            return FileLogObserver(out, format_json_line)
        if self.journal:
            return FileLogObserver(out, format_journal_line)
        return textFileLogObserver(out)


def _rotated_by_sigusr1(log_file: LogFile) -> LogFile:
    # As twistd does for its own log file: SIGUSR1 reopens it, unless taken.
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: object) -> None:
            from twisted.internet import reactor

            IReactorFromThreads(reactor).callFromThread(log_file.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return log_file


def writes_to_journal(environ: Mapping[str, str] = os.environ, stream: IO[str] | IO[bytes] | None = None) -> bool:
    """
    Whether C{stream} (standard output by default) is the systemd journal:
    C{$JOURNAL_STREAM} names its device and inode.  (C{$INVOCATION_ID}
    alone says that systemd started us, not where our output goes: a unit
    may send it to a file, which needs the times in its lines.)
    """
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        status = os.fstat((stream or sys.stdout).fileno())
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False


#: What L{observer} makes; set by C{twistd midjobs}'s options.
_destination = LogDestination()


def log_to(destination: LogDestination) -> None:
    """
    Make L{observer} write to C{destination}.
    """
    global _destination
    _destination = destination


def observer() -> ILogObserver:
    """
    twistd's log observer factory (C{twistd --logger midjobs.logs.observer}):
    an observer that writes where L{log_to} said.  C{twistd midjobs} names
    it itself when C{--log-format json} or the journal asks for more than
    twistd's own text file.
    """
    return _destination.observer()
