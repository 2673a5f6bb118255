"""
JSON-RPC 2.0 framing: parsing requests, and shaping results and errors.
"""

from __future__ import annotations

import errno
import functools
import traceback
from types import CodeType
from typing import Any

import attrs
from zope.interface import implementer

from .. import wire_json
from ..errors import ENOMETHOD, ENOTAUTHENTICATED, CallError, adapted, errno_name, validation_errors
from ..events import IEventSerializer, Notification

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
TOO_MANY_CONCURRENT_CALLS = -32000
METHOD_CALL_ERROR = -32001

_MESSAGES = {
    METHOD_NOT_FOUND: "Method does not exist",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal error",
    METHOD_CALL_ERROR: "Method call error",
}

_NO_ID = object()


@attrs.frozen
class Request:
    """
    A well-formed request; C{id} is L{_NO_ID} for a notification.
    """

    id: Any
    method: str
    params: list[Any]

    @property
    def is_notification(self) -> bool:
        return self.id is _NO_ID

    @property
    def response_id(self) -> Any:
        return None if self.is_notification else self.id


class RpcError(Exception):
    """
    An error response: C{code}, C{message} and optional C{data}.
    """

    def __init__(self, code: int, message: str | None = None, data: Any = None, id: Any = None) -> None:
        self.code = code
        self.message = message or _MESSAGES[code]
        self.data = data
        self.id = id
        super().__init__(code, self.message)

    def response(self) -> str:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return wire_json.dumps({"jsonrpc": "2.0", "id": self.id, "error": error})


def parse_request(payload: bytes) -> Request:
    """
    Parse one WebSocket message.

    @raise RpcError: C{PARSE_ERROR} or C{INVALID_REQUEST}.
    """
    try:
        message = wire_json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RpcError(PARSE_ERROR, str(e)) from None
    except RecursionError:
        raise RpcError(PARSE_ERROR, "JSON nested too deeply") from None
    if isinstance(message, list):
        raise RpcError(INVALID_REQUEST, "Batch requests are not supported")
    if not isinstance(message, dict):
        raise RpcError(INVALID_REQUEST, "A request must be a JSON object")
    message_id = message.get("id", _NO_ID)
    if message_id is not _NO_ID and (
        isinstance(message_id, bool) or not isinstance(message_id, (str, int, type(None)))
    ):
        raise RpcError(INVALID_REQUEST, "'id' must be a string, an integer or null")
    response_id = None if message_id is _NO_ID else message_id
    if message.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, "'jsonrpc' must be exactly \"2.0\"", id=response_id)
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, "'method' must be a non-empty string", id=response_id)
    params = message.get("params", [])
    if not isinstance(params, list):
        raise RpcError(INVALID_REQUEST, "'params' must be an array", id=response_id)
    return Request(message_id, method, params)


def result_response(request_id: Any, result: Any) -> str:
    """
    The success response.

    @raise RpcError: C{INTERNAL_ERROR}, the result has no JSON form.
    """
    try:
        return wire_json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})
    except (TypeError, ValueError) as e:
        raise RpcError(INTERNAL_ERROR, data=error_data(e, errno.EFAULT, with_trace=False), id=request_id) from None


def format_trace(error: BaseException) -> str:
    """
    The traceback of C{error} as L{traceback.format_exception} writes it, but
    without the column markers of Python 3.11 (C{^^^^}), and with the frames
    formatted once for each place an error comes from: any client can make
    calls fail as fast as it can send them, and formatting a traceback costs
    far more than the call.
    """
    places = []
    tb = error.__traceback__
    while tb is not None:
        places.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    return _formatted_frames(tuple(places)) + "".join(traceback.format_exception_only(type(error), error))


@functools.lru_cache(maxsize=1024)
def _formatted_frames(places: tuple[tuple[CodeType, int], ...]) -> str:
    if not places:
        return ""
    frames = traceback.StackSummary.from_list([(code.co_filename, line, code.co_name, None) for code, line in places])
    return "".join(["Traceback (most recent call last):\n", *frames.format()])


def error_data(error: BaseException, code: int | None, with_trace: bool = True, formatted: str | None = None) -> dict[str, Any]:
    """
    The C{data} of an error response for C{error}.
    """
    reason = error.errmsg if isinstance(error, CallError) else str(error) or type(error).__name__
    trace = None
    if with_trace:
        if formatted is None:
            formatted = format_trace(error)
        trace = {"class": type(error).__name__, "formatted": formatted, "repr": repr(error)}
    return {
        "error": code,
        "errname": errno_name(code),
        "reason": reason,
        "trace": trace,
        "extra": getattr(error, "extra", None) if isinstance(error, CallError) else None,
    }


def error_for(error: BaseException, request_id: Any, formatted: str | None = None) -> RpcError:
    """
    The error response for an exception raised by a call.
    """
    error = adapted(error)
    invalid = validation_errors(error)
    if invalid is not None:
        return RpcError(INVALID_PARAMS, data=error_data(invalid, errno.EINVAL, with_trace=False), id=request_id)
    if isinstance(error, CallError):
        if error.errno == ENOMETHOD:
            return RpcError(METHOD_NOT_FOUND, data=error_data(error, ENOMETHOD, with_trace=False), id=request_id)
        quiet = error.errno == ENOTAUTHENTICATED
        return RpcError(
            METHOD_CALL_ERROR, data=error_data(error, error.errno, not quiet, formatted), id=request_id
        )
    return RpcError(METHOD_CALL_ERROR, data=error_data(error, errno.EFAULT, True, formatted), id=request_id)


@implementer(IEventSerializer)
class CollectionUpdates:
    """
    Events as JSON-RPC notifications: C{collection_update} with C{msg},
    C{collection}, C{id} and, if the event carries them, C{fields}.
    """

    def serialize(self, notification: Notification) -> bytes:
        params: dict[str, Any] = {"msg": notification.msg, "collection": notification.collection, "id": notification.id}
        if notification.fields is not None:
            params["fields"] = notification.fields
        return wire_json.dumps({"jsonrpc": "2.0", "method": "collection_update", "params": params}).encode("utf-8")


#: The one serializer of the WebSocket's events.
COLLECTION_UPDATES = CollectionUpdates()
