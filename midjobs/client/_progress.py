"""
How C{midclt call --job} shows a job's progress on stderr.

    Status: (none)
    Total Progress: [########################################] 100.00%

On a terminal the two lines are redrawn in place; elsewhere both are written
again on each change.
"""

from __future__ import annotations

import shutil
from typing import TextIO

from ._types import JobRecord

__all__ = ["BAR_WIDTH", "ProgressDisplay", "job_status", "job_percent", "progress_lines"]

BAR_WIDTH = 40

_UP_AND_CLEAR = "\x1b[1A\r\x1b[2K"
_CLEAR = "\r\x1b[2K"


def job_status(job: JobRecord) -> str:
    """
    The progress description, else the job's description, else C{(none)}.
    """
    progress = job.get("progress") or {}
    return progress.get("description") or job.get("description") or "(none)"


def job_percent(job: JobRecord) -> float:
    """
    The job's progress in percent, 0 when unknown.
    """
    percent = (job.get("progress") or {}).get("percent")
    return float(percent) if isinstance(percent, (int, float)) else 0.0


def progress_lines(status: str, percent: float) -> tuple[str, str]:
    """
    The C{Status:} and C{Total Progress:} lines.
    """
    filled = min(BAR_WIDTH, max(0, int(percent * BAR_WIDTH / 100)))
    bar = "#" * filled + "_" * (BAR_WIDTH - filled)
    return f"Status: {status}", f"Total Progress: [{bar}] {percent:.2f}%"


class ProgressDisplay:
    """
    Draws a job's progress as it changes (a L{JobCallback}).

    @param mode: C{progressbar} for the two lines, C{description} to write
        each new description on its own line instead.
    """

    def __init__(self, stream: TextIO, mode: str = "progressbar", tty: bool | None = None) -> None:
        self._stream = stream
        self._mode = mode
        self._tty = stream.isatty() if tty is None else tty
        self._shown: tuple[str, float] | None = None
        self._job: JobRecord = {}

    def __call__(self, job: JobRecord) -> None:
        self._job = job
        self._show(job_status(job), job_percent(job))

    def finish(self, success: bool) -> None:
        """
        The job ended: on success show 100% (unless already shown); end the line.
        """
        if success:
            self._show(job_status(self._job), 100.0)
        self.end_line()

    def end_line(self) -> None:
        """
        Leave the cursor on a fresh line after an in-place bar.
        """
        if self._mode == "progressbar" and self._tty and self._shown is not None:
            self._stream.write("\n")
            self._stream.flush()
            self._shown = None

    def _show(self, status: str, percent: float) -> None:
        if self._mode == "description":
            if status != "(none)" and (self._shown is None or self._shown[0] != status):
                self._stream.write(status + "\n")
                self._stream.flush()
            self._shown = (status, percent)
            return
        if self._shown == (status, percent):
            return
        shown = (status, percent)
        if self._tty:
            status = " ".join(status.split())
            width = shutil.get_terminal_size().columns - 1
            if width > 20 and len(status) > width - 8:
                status = status[: width - 11] + "..."
            first, second = progress_lines(status, percent)
            prefix = "" if self._shown is None else _UP_AND_CLEAR
            self._stream.write(f"{prefix}{first}\n{_CLEAR}{second}")
        else:
            first, second = progress_lines(status, percent)
            self._stream.write(f"{first}\n{second}\n")
        self._stream.flush()
        self._shown = shown
