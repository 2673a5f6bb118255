"""
The errors a client call can end with, and how they are built from the wire.

Method failures (JSON-RPC -32001 and -32602, or a FAILED job) become
L{ClientCallError}, a L{midjobs.errors.CallError}, so code that catches the
daemon's own C{CallError} works on both sides of the socket.  Every other
JSON-RPC error becomes L{JSONRPCError}.
"""

from __future__ import annotations

import errno as _errno
from typing import Any

from midjobs.errors import CallError, ValidationError, errno_name

from ._types import JobRecord

__all__ = [
    "ClientError",
    "ClientConnectFailed",
    "ClientConnectionLost",
    "JSONRPCError",
    "ClientCallError",
    "ClientValidationErrors",
    "JobAborted",
    "error_from_response",
    "error_from_data",
    "error_from_job",
]

METHOD_CALL_ERROR = -32001
INVALID_PARAMS = -32602


class ClientError(Exception):
    """
    Base of the errors the client raises that are not method failures.
    """


class ClientConnectFailed(ClientError):
    """
    The connection was made but the WebSocket opening handshake failed.
    """


class ClientConnectionLost(ClientError):
    """
    The connection ended before the answer came.
    """


class JSONRPCError(ClientError):
    """
    A JSON-RPC error other than a method failure (-32601, -32600, -32000, ...).

    @ivar code: the JSON-RPC error code.
    @ivar message: the error's message.
    @ivar data: the error's C{data}, or L{None}.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        reason = self.data.get("reason") if isinstance(self.data, dict) else None
        if reason and reason != self.message:
            return f"{self.message}: {reason}"
        return self.message


class ClientCallError(CallError):
    """
    A method (or a job) failed on the daemon.

    @ivar errno: the errno value, or L{None} when the daemon sent none.
    @ivar errname: its symbolic name (C{EINVAL}, C{ENOTAUTHENTICATED}).
    @ivar reason: the human-readable reason.
    @ivar trace: C{{"class", "formatted", "repr"}} or L{None}; C{formatted} is
        the daemon-side traceback text.
    @ivar extra: any JSON value that tells more, or L{None}.
    @ivar code: the JSON-RPC code it came with (-32001 for job failures).
    """

    def __init__(
        self,
        reason: str,
        errno: int | None = _errno.EFAULT,
        errname: str | None = None,
        trace: dict[str, Any] | None = None,
        extra: Any = None,
        code: int = METHOD_CALL_ERROR,
    ) -> None:
        # The daemon may send no errno: here it is int | None, where CallError says int.
        super().__init__(reason, errno, extra)  # type: ignore[arg-type]
        self.reason = reason
        self.errname = errname or errno_name(errno)
        self.trace = trace
        self.code = code

    def __str__(self) -> str:
        if not self.errname or self.reason.startswith(f"[{self.errname}]"):
            return self.reason
        return f"[{self.errname}] {self.reason}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.errno!r}, {self.errname!r})"


class ClientValidationErrors(ClientCallError):
    """
    A method refused its arguments (JSON-RPC -32602, or a job whose
    C{exc_info.type} is C{VALIDATION}).

    C{extra} is the list of C{[attribute, errmsg, errno]}.
    """

    @property
    def errors(self) -> list[ValidationError]:
        """
        One L{ValidationError} per bad attribute.
        """
        found = []
        for item in self.extra or ():
            if isinstance(item, (list, tuple)) and len(item) >= 2:
                code = item[2] if len(item) > 2 and isinstance(item[2], int) else _errno.EINVAL
                found.append(ValidationError(str(item[0]), str(item[1]), code))
        return found

    def __str__(self) -> str:
        return self.reason


class JobAborted(ClientError):
    """
    The job was aborted.

    @ivar job: the job's last record.
    """

    def __init__(self, job: JobRecord) -> None:
        super().__init__(job.get("error") or "Job was aborted")
        self.job = job


def error_from_data(data: object, code: int = METHOD_CALL_ERROR) -> ClientCallError:
    """
    The exception for a method-failure C{data} object
    (C{{"error", "errname", "reason", "trace", "extra"}}).
    """
    fields = data if isinstance(data, dict) else {}
    cls = ClientValidationErrors if code == INVALID_PARAMS else ClientCallError
    trace = fields.get("trace")
    return cls(
        str(fields.get("reason") or "Method call error"),
        fields.get("error"),
        fields.get("errname"),
        trace if isinstance(trace, dict) else None,
        fields.get("extra"),
        code,
    )


def error_from_response(error: object) -> Exception:
    """
    The exception for the C{error} member of a JSON-RPC response.
    """
    if not isinstance(error, dict):
        return JSONRPCError(0, f"Malformed error: {error!r}")
    code = error.get("code")
    data = error.get("data")
    if code in (METHOD_CALL_ERROR, INVALID_PARAMS) and isinstance(data, dict):
        return error_from_data(data, code)
    return JSONRPCError(code if isinstance(code, int) else 0, str(error.get("message", "")), data)


def error_from_job(job: JobRecord) -> Exception:
    """
    The exception a FAILED or ABORTED job ends with.
    """
    if job.get("state") == "ABORTED":
        return JobAborted(job)
    exc_info = job.get("exc_info") or {}
    validation = exc_info.get("type") == "VALIDATION"
    cls = ClientValidationErrors if validation else ClientCallError
    code = exc_info.get("errno")
    if code is None:
        code = _errno.EINVAL if validation else _errno.EFAULT
    formatted = job.get("exception")
    trace = None
    if formatted:
        trace = {"class": exc_info.get("type"), "formatted": formatted, "repr": exc_info.get("repr")}
    return cls(
        str(job.get("error") or "Job failed"),
        code,
        errno_name(code),
        trace,
        exc_info.get("extra"),
        INVALID_PARAMS if validation else METHOD_CALL_ERROR,
    )
