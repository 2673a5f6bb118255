"""
Texts a job's record carries, bounded: L{cut} keeps the start and the end of
a text longer than L{MAX_TEXT}, so that neither a call's large arguments
nor a job's long error or log line make every record the daemon keeps large.
"""

from __future__ import annotations

__all__ = ["MAX_TEXT", "cut"]

#: The most characters of each text a job's record derives from its
#: arguments, its error or its log (C{description}, C{error}, C{exception},
#: C{exc_info.repr}, C{logs_excerpt}).
MAX_TEXT = 16 * 1024


def cut(text: str, most: int = MAX_TEXT) -> str:
    """
    C{text}, or if it is longer than C{most} characters, its start and its
    end with C{"…"} between them, C{most} characters in all: how it begins
    and how it ends (an error's message, a traceback's last line) both show.
    """
    if len(text) <= most:
        return text
    head = (most - 1) // 2
    return text[:head] + "…" + text[len(text) - (most - 1 - head):]
