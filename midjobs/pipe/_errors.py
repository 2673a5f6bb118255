"""
The exceptions a pipe raises.
"""

from __future__ import annotations

from twisted.python.failure import Failure

__all__ = ["PipeBrokenError", "PipeError", "as_failure"]


class PipeError(Exception):
    """
    A pipe was used in a way its state does not allow (written after
    close, read after its reader discarded it, given two readers).
    """


class PipeBrokenError(PipeError):
    """
    The other side of the pipe went away before the transfer ended.
    """


def as_failure(reason: BaseException | Failure) -> Failure:
    """
    C{reason} as a L{Failure}.
    """
    if isinstance(reason, Failure):
        return reason
    return Failure(reason)  # type: ignore[no-untyped-call]  # Failure.__init__ is not annotated
