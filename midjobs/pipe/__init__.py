"""
Pipes: flow-controlled byte channels between an HTTP connection and a job.

A L{Pipe} is a bounded buffer.  Its writing side is an L{IConsumer}: an
upload feeds it with C{await pipe.write(data)} or registers the HTTP
connection as its producer, and the pipe holds the writer back when
C{high_water} bytes are buffered until the reader has drained the buffer to
C{low_water}.  Its reading side is an L{IPushProducer}: a download hands the
pipe to the HTTP response with L{Pipe.deliver_to}, and a slow client pauses
the pipe, which fills, which makes the job's writes wait.

Async jobs use C{await pipe.read(n)} / C{await pipe.write(data)}; thread jobs
use the file objects C{pipe.r} / C{pipe.w}, which block only their own
thread.  A pipe never ends in a way that looks like a short file:
L{Pipe.abort} makes every pending and later read and write raise the reason,
and C{b""} is returned only after the writer called L{Pipe.close}.

The layers, each in its own module: where the bytes wait (C{_buffer}: in
memory, or spooled to a temporary file for a buffered pipe); the flow
control in the reactor thread (C{_core}: a plain L{IConsumer} and
L{IPushProducer}); the blocking thread ends (C{_threads}: L{io.BufferedReader}
and L{io.BufferedWriter} over raw ends that reach the reactor through
C{blockingCallFromThread}); L{Pipe} (C{_pipe}), and a job's L{Pipes} and
L{InputPipes} (C{_inputs}).
"""

from ._errors import PipeBrokenError, PipeError
from ._inputs import InputPipes, Pipes
from ._core import PipeState
from ._pipe import Pipe
from ._threads import PipeReader, PipeWriter

__all__ = [
    "InputPipes",
    "Pipe",
    "PipeBrokenError",
    "PipeError",
    "PipeReader",
    "PipeState",
    "PipeWriter",
    "Pipes",
]
