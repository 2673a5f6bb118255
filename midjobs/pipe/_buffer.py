"""
Where a pipe keeps the bytes written and not yet read: in memory, or spooled
to a temporary file.

Both strategies keep the bytes in order and hand them out whole when they
can (a chunk written is the chunk read, without a copy).  They know nothing
of threads, water marks or Deferreds: L{midjobs.pipe._core.PipeCore} decides
when to call them.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from typing import IO, Protocol

from ._errors import PipeError

__all__ = ["MemoryBuffer", "PipeBuffer", "SpoolBuffer"]

#: How much of a spool is read back from disk at once.
SPOOL_BLOCK = 256 * 1024


class PipeBuffer(Protocol):
    """
    The unread bytes of a pipe, in order.
    """

    @property
    def size(self) -> int:
        """
        How many bytes are unread.
        """

    @property
    def level(self) -> int:
        """
        How many bytes count against the pipe's water marks: the writer is held
        back while this is at its high water.
        """

    @property
    def in_memory(self) -> int:
        """
        How many of the unread bytes are held in memory.
        """

    def append(self, data: bytes) -> None:
        """
        Keep C{data} (the object itself where possible: it must not change).
        """

    def chunk(self) -> bytes:
        """
        Take the next piece as it was written (or one block of a spool);
        C{b""} when empty.
        """

    def take(self, n: int) -> bytes:
        """
        Take up to C{n} bytes, or for C{n < 0} everything held in memory
        (bringing one block back from a spool first); C{b""} when empty.
        """

    def take_into(self, view: memoryview) -> int:
        """
        Move up to C{len(view)} bytes into C{view}; 0 when empty.
        """

    def clear(self) -> None:
        """
        Drop every unread byte and release what holds them; appending then
        keeps nothing.
        """


class MemoryBuffer:
    """
    The bytes in memory: the chunks as written, and how much of the first is read.
    """

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._head = 0
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    level = in_memory = size

    def append(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)

    def chunk(self) -> bytes:
        if not self._chunks:
            return b""
        chunk, head = self._chunks.popleft(), self._head
        self._head = 0
        self._size -= len(chunk) - head
        return chunk[head:] if head else chunk

    def take(self, n: int) -> bytes:
        if n < 0 or n >= self._size:
            if len(self._chunks) == 1:
                return self.chunk()
            n = self._size
        pieces = []
        while n:
            chunk, head = self._chunks[0], self._head
            left = len(chunk) - head
            if left <= n:
                pieces.append(self.chunk())
                n -= left
            else:
                pieces.append(chunk[head : head + n])
                self._head += n
                self._size -= n
                n = 0
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def take_into(self, view: memoryview) -> int:
        done, chunks = 0, self._chunks
        while done < len(view) and chunks:
            chunk, head = chunks[0], self._head
            size = min(len(chunk) - head, len(view) - done)
            view[done : done + size] = memoryview(chunk)[head : head + size]
            done += size
            if head + size == len(chunk):
                chunks.popleft()
                self._head = 0
            else:
                self._head = head + size
        self._size -= done
        return done

    def clear(self) -> None:
        self._chunks.clear()
        self._head = self._size = 0


class SpoolBuffer:
    """
    The bytes in an unbuffered temporary file, read back in blocks of
    C{SPOOL_BLOCK} bytes: the writer is never held back, and memory holds at
    most one block.

    @ivar file: the temporary file, or L{None} once cleared.
    """

    def __init__(self, block: int = SPOOL_BLOCK) -> None:
        self.file: IO[bytes] | None = tempfile.TemporaryFile(buffering=0)
        self._block = block
        self._written = 0  # bytes written to the file
        self._read = 0  # bytes of the file read back
        self._memory = MemoryBuffer()  # the block read back, partly taken

    @property
    def size(self) -> int:
        return self._memory.size + self._written - self._read

    @property
    def level(self) -> int:
        return 0

    @property
    def in_memory(self) -> int:
        return self._memory.size

    def append(self, data: bytes) -> None:
        if self.file is None:
            return
        fd, view, done = self.file.fileno(), memoryview(data), 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], self._written + done)
        self._written += done

    def chunk(self) -> bytes:
        self._read_back()
        return self._memory.chunk()

    def take(self, n: int) -> bytes:
        self._read_back()
        return self._memory.take(n)

    def take_into(self, view: memoryview) -> int:
        done = self._memory.take_into(view)
        left = min(len(view) - done, self._written - self._read)
        if left and self.file is not None:
            # Straight from the file into the reader's buffer.
            got = os.preadv(self.file.fileno(), [view[done : done + left]], self._read)
            self._check(got)
            self._read += got
            done += got
        return done

    def clear(self) -> None:
        self._memory.clear()
        self._read = self._written
        if self.file is not None:
            self.file.close()
            self.file = None

    def _read_back(self) -> None:
        if self.file is not None and not self._memory.size and self._read < self._written:
            data = os.pread(self.file.fileno(), min(self._block, self._written - self._read), self._read)
            self._check(len(data))
            self._read += len(data)
            self._memory.append(data)

    def _check(self, got: int) -> None:
        if not got:
            raise PipeError("The pipe's spool file was truncated")
