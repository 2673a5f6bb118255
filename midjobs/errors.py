"""
Exceptions that cross the wire, with the errno values the protocol carries.

A method raises :class:`CallError` for a failure the caller should see with an
errno, and :class:`ValidationErrors` for bad arguments.  The RPC layer turns
the first into JSON-RPC error -32001 and the second into -32602
(C{docs/protocol.rst}, "Error codes"); the job layer records both in the job's ``exc_info``.
"""

from __future__ import annotations

import errno
import shlex
import subprocess
from typing import Any, Iterable, Iterator, Mapping

#: The daemon's own errno values, beside those of :mod:`errno`.
ENOMETHOD = 201
ENOTAUTHENTICATED = 207

_OWN_ERRNO_NAMES = {ENOMETHOD: "ENOMETHOD", ENOTAUTHENTICATED: "ENOTAUTHENTICATED"}


def errno_name(code: int | None) -> str | None:
    """
    The symbolic name of an errno value: ``EINVAL`` for 22, ``ENOMETHOD`` for 201.
    """
    if code is None:
        return None
    return _OWN_ERRNO_NAMES.get(code) or errno.errorcode.get(code)


class CallError(Exception):
    """
    A method failed in a way its caller should see.

    @ivar errmsg: the human-readable reason.
    @ivar errno: an :mod:`errno` value (default ``EFAULT``), or one of the
        daemon's own (:data:`ENOMETHOD`, :data:`ENOTAUTHENTICATED`).
    @ivar extra: any JSON value that tells the caller more.
    """

    def __init__(self, errmsg: str, errno: int = errno.EFAULT, extra: Any = None) -> None:
        super().__init__(errmsg, errno, extra)
        self.errmsg = errmsg
        self.errno = errno
        self.extra = extra

    def __str__(self) -> str:
        name = errno_name(self.errno)
        return f"[{name}] {self.errmsg}" if name else self.errmsg

    def __repr__(self) -> str:
        return f"CallError({self.errmsg!r}, {self.errno!r}, {self.extra!r})"


def adapted(error: BaseException) -> BaseException:
    """
    The error a caller is told of for C{error}: a failed command
    (C{subprocess.CalledProcessError}, from C{run(..., check=True)}) becomes
    a L{CallError} that names the command, its exit code and what it wrote,
    as in the original daemon; any other error is itself.
    """
    if not isinstance(error, subprocess.CalledProcessError):
        return error
    command = shlex.join(str(part) for part in error.cmd) if isinstance(error.cmd, (list, tuple)) else str(error.cmd)
    output = "".join(_text(stream) for stream in (error.stdout, error.stderr)).rstrip()
    failed = CallError(f"Command {command} failed (code {error.returncode}):\n{output}")
    failed.__cause__ = error
    return failed.with_traceback(error.__traceback__)


def _text(stream: str | bytes | None) -> str:
    if isinstance(stream, bytes):
        return stream.decode("utf-8", "replace")
    return stream or ""


class ValidationError(CallError):
    """
    One bad argument: C{attribute} names it (dotted, like C{data.sleep}).
    """

    def __init__(self, attribute: str, errmsg: str, errno: int = errno.EINVAL) -> None:
        super().__init__(errmsg, errno)
        self.attribute = attribute

    def __str__(self) -> str:
        return f"[{errno_name(self.errno)}] {self.attribute}: {self.errmsg}"

    def __repr__(self) -> str:
        return f"ValidationError({self.attribute!r}, {self.errmsg!r}, {self.errno!r})"


class ValidationErrors(CallError):
    """
    Several bad arguments at once, reported together.

    Collect with :meth:`add` and raise with :meth:`check`; ``extra`` on the
    wire is the list of C{[attribute, errmsg, errno]}.
    """

    def __init__(self, errors: Iterable[ValidationError] = ()) -> None:
        self.errors: list[ValidationError] = list(errors)
        super().__init__(self._message(), errno.EINVAL)

    def _message(self) -> str:
        return "\n".join(str(e) for e in self.errors)

    def add(self, attribute: str, errmsg: str, errno: int = errno.EINVAL) -> None:
        self.add_validation_error(ValidationError(attribute, errmsg, errno))

    def add_validation_error(self, error: ValidationError) -> None:
        """
        Add one error made elsewhere.
        """
        self.errors.append(error)
        self.errmsg = self._message()
        self.args = (self.errmsg, self.errno, None)

    def add_child(self, attribute: str, child: ValidationErrors) -> None:
        """
        Add the errors of C{child}, found in the value of C{attribute}: their
        attributes become C{<attribute>.<theirs>}.
        """
        for error in child.errors:
            self.add(f"{attribute}.{error.attribute}", error.errmsg, error.errno)

    def extend(self, other: ValidationErrors) -> None:
        """
        Add the errors of C{other} as they are.
        """
        for error in other.errors:
            self.add_validation_error(error)

    def add_field_errors(self, data: object, allowed: Iterable[str], required: Iterable[str] = ()) -> bool:
        """
        Add what is wrong with the shape of C{data}, an object argument:
        not an object, a field not in C{allowed}, a C{required} one missing.

        @return: whether C{data} is an object (whose fields may be checked on).
        """
        if not isinstance(data, Mapping):
            self.add("data", "Expected an object")
            return False
        allowed = frozenset(allowed)
        for key in data:
            if key not in allowed:
                self.add(str(key), "Field was not expected")
        for key in required:
            if key not in data:
                self.add(key, "Field is required")
        return True

    def check(self) -> None:
        """
        Raise C{self} if any error was added.
        """
        if self.errors:
            raise self

    @property
    def extra(self) -> list[list[str | int]]:
        return [[e.attribute, e.errmsg, e.errno] for e in self.errors]

    @extra.setter
    def extra(self, value: object) -> None:
        pass

    def __iter__(self) -> Iterator[ValidationError]:
        return iter(self.errors)

    def __len__(self) -> int:
        return len(self.errors)

    def __bool__(self) -> bool:
        # As in the original: "if verrors: raise verrors".
        return bool(self.errors)

    def __contains__(self, attribute: object) -> bool:
        """
        Whether an error names C{attribute}.
        """
        return any(error.attribute == attribute for error in self.errors)

    def __str__(self) -> str:
        return self.errmsg

    def __repr__(self) -> str:
        return f"ValidationErrors({self.errors!r})"


def validation_errors(error: BaseException) -> ValidationErrors | None:
    """
    The validation errors C{error} reports, if it reports some: itself, or
    a lone L{ValidationError} raised on its own (the original daemon reports
    it as it does a L{ValidationErrors} of one).
    """
    if isinstance(error, ValidationErrors):
        return error
    if isinstance(error, ValidationError):
        return ValidationErrors([error])
    return None
