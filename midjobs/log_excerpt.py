"""
A job log's excerpt: its first and last lines, with a count of those between.

L{read_excerpt} reads only the head and the tail of the file and counts the
lines between in fixed-size chunks, so a large log costs little memory; it
blocks, so the daemon calls it off the reactor thread.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from .texts import cut

__all__ = ["EXCERPT_LINES", "logs_excerpt", "read_excerpt"]

#: How many lines an excerpt keeps at each end.
EXCERPT_LINES = 10

#: Bytes read at once: the head and the tail are read a chunk at a time.
_CHUNK = 64 * 1024
#: Bytes of each end read at most, however long its lines.
_LONGEST = 4 * _CHUNK
#: A file this small is read whole; up to L{_WHOLE}, whole when its lines
#: are too long to tell its ends from its middle.
_SMALL = 4 * _CHUNK
_WHOLE = 16 * _CHUNK


def logs_excerpt(text: str, lines: int = EXCERPT_LINES) -> str:
    """
    The first and last C{lines} lines of C{text}, each with its line break,
    and a line that counts those between, as the original daemon writes it.
    """
    all_lines = text.splitlines(keepends=True)
    if len(all_lines) <= 2 * lines:
        return text
    return _joined(all_lines[:lines], len(all_lines) - 2 * lines, all_lines[-lines:])


def _joined(first: list[str], between: int, last: list[str]) -> str:
    return "".join(first) + f"... {between} more lines ...\n" + "".join(last)


def read_excerpt(path: str | os.PathLike[str], lines: int = EXCERPT_LINES) -> str:
    """
    L{logs_excerpt} of the log file at C{path}, decoded as UTF-8 (bad bytes
    replaced) and cut to L{midjobs.texts.MAX_TEXT} characters (its start and its end),
    without reading the whole file into memory: a file larger than a few
    chunks is read as its head, its tail, and a count of the line breaks
    (C{\\n}) between, each end at most C{_LONGEST} bytes.

    @raise OSError: the file cannot be read.
    """
    return cut(_excerpt(path, lines))


def _excerpt(path: str | os.PathLike[str], lines: int) -> str:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= _SMALL:
            return logs_excerpt(f.read().decode("utf-8", "replace"), lines)
        head = _head(f, lines)
        tail_start = max(_tail_start(f, size, lines), len(head))
        f.seek(len(head))
        between = _count_breaks(f, tail_start - len(head))
        f.seek(tail_start)
        tail = f.read()
    first = head.decode("utf-8", "replace").splitlines(keepends=True)
    last = tail.decode("utf-8", "replace").splitlines(keepends=True)
    if (len(first) < lines or len(last) < lines or between == 0) and size <= _WHOLE:
        # Long lines: too few at either end to tell them apart from the
        # middle.  A file this small is read whole, for the exact excerpt.
        with open(path, "rb") as f:
            return logs_excerpt(f.read().decode("utf-8", "replace"), lines)
    return _joined(first, between, last)


def _head(f: BinaryIO, lines: int) -> bytes:
    """
    The first C{lines} lines of C{f}, each with its line break.
    """
    data = b""
    while data.count(b"\n") < lines and len(data) < _LONGEST:
        chunk = f.read(_CHUNK)
        if not chunk:
            break
        data += chunk
    end = -1
    for _ in range(lines):
        end = data.find(b"\n", end + 1)
        if end < 0:
            return data
    return data[: end + 1]


def _tail_start(f: BinaryIO, size: int, lines: int) -> int:
    """
    The offset in C{f} where its last C{lines} lines begin.
    """
    # A final line without a break counts as a line, as splitlines() counts it.
    wanted = lines if not _ends_with_break(f, size) else lines + 1
    position = size
    found = 0
    while position > 0 and size - position < _LONGEST:
        start = max(0, position - _CHUNK)
        f.seek(start)
        chunk = f.read(position - start)
        index = len(chunk)
        while True:
            index = chunk.rfind(b"\n", 0, index)
            if index < 0:
                break
            found += 1
            if found == wanted:
                return start + index + 1
        position = start
    return position


def _ends_with_break(f: BinaryIO, size: int) -> bool:
    f.seek(size - 1)
    return f.read(1) == b"\n"


def _count_breaks(f: BinaryIO, length: int) -> int:
    """
    The line breaks in the next C{length} bytes of C{f}.
    """
    count = 0
    while length > 0:
        chunk = f.read(min(_CHUNK, length))
        if not chunk:
            break
        count += chunk.count(b"\n")
        length -= len(chunk)
    return count
