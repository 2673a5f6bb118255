"""
How C{midclt call --job} shows a job's progress on stderr.

    Status: Uploading /data/disk.img
    Total Progress: [####################____________________] 50.00%  512 MiB of 1 GiB, 172 MiB/s, 3 s left

On a terminal the two lines are redrawn in place; elsewhere both are written
again on each change.

The figures after the bar are those of a job that moves bytes (the standard
C{progress.extra} fields C{bytes}, C{total_bytes}, C{rate} and
C{eta_seconds}), each shown only when the job has it.  Sizes and rates are
both in binary units (1 KiB = 1024 bytes, C{MiB/s} = 1048576 bytes a second),
as C{ls -h} and C{du -h} count.
"""

from __future__ import annotations

import shutil
from typing import TextIO

from ._types import JobRecord

__all__ = [
    "BAR_WIDTH",
    "ProgressDisplay",
    "format_duration",
    "format_size",
    "job_percent",
    "job_status",
    "job_transfer",
    "progress_lines",
    "transfer_text",
]

BAR_WIDTH = 40

_UP_AND_CLEAR = "\x1b[1A\r\x1b[2K"
_CLEAR = "\r\x1b[2K"

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def _number(value: object) -> float | None:
    """
    C{value} if it is a finite, non-negative number (not a bool), else L{None}.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        return None
    return float(value)


def format_size(size: float) -> str:
    """
    C{size} bytes in binary units with three significant digits at most:
    C{"512 B"}, C{"1.5 KiB"}, C{"12.3 MiB"}, C{"1 GiB"}.
    """
    value = float(size)
    unit = 0
    while unit < len(_UNITS) - 1 and round(value) >= 1024:
        value /= 1024
        unit += 1
    if unit == 0 or value >= 100:
        text = f"{value:.0f}"
    else:
        text = f"{value:.3g}"
        if "e" in text:
            text = f"{value:.0f}"
    return f"{text} {_UNITS[unit]}"


def format_duration(seconds: float) -> str:
    """
    C{seconds} rounded up, as C{"3 s"}, C{"2 min 5 s"} or C{"1 h 4 min"}.
    """
    whole = int(-(-seconds // 1))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def transfer_text(extra: object) -> str | None:
    """
    The transfer figures of a job's C{progress.extra}, as
    C{"512 MiB of 1 GiB, 172 MiB/s, 3 s left"}: each part only when the extra
    has it (and it is a number); L{None} without C{bytes}.
    """
    if not isinstance(extra, dict):
        return None
    moved = _number(extra.get("bytes"))
    if moved is None:
        return None
    text = format_size(moved)
    total = _number(extra.get("total_bytes"))
    if total is not None:
        text += f" of {format_size(total)}"
    rate = _number(extra.get("rate"))
    if rate is not None:
        text += f", {format_size(rate)}/s"
    eta = _number(extra.get("eta_seconds"))
    if eta is not None:
        text += f", {format_duration(eta)} left"
    return text


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


def job_transfer(job: JobRecord) -> str | None:
    """
    The job's transfer figures (L{transfer_text}), or L{None}.
    """
    return transfer_text((job.get("progress") or {}).get("extra"))


def progress_lines(status: str, percent: float, transfer: str | None = None) -> tuple[str, str]:
    """
    The C{Status:} and C{Total Progress:} lines; the C{transfer} figures,
    if any, after the bar.
    """
    filled = min(BAR_WIDTH, max(0, int(percent * BAR_WIDTH / 100)))
    bar = "#" * filled + "_" * (BAR_WIDTH - filled)
    second = f"Total Progress: [{bar}] {percent:.2f}%"
    if transfer:
        second += f"  {transfer}"
    return f"Status: {status}", second


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
        self._shown: tuple[str, float, str | None] | None = None
        self._job: JobRecord = {}

    def __call__(self, job: JobRecord) -> None:
        self._job = job
        self._show(job_status(job), job_percent(job), job_transfer(job))

    def finish(self, success: bool) -> None:
        """
        The job ended: on success show 100% (unless already shown); end the line.
        """
        if success:
            self._show(job_status(self._job), 100.0, job_transfer(self._job))
        self.end_line()

    def end_line(self) -> None:
        """
        Leave the cursor on a fresh line after an in-place bar.
        """
        if self._mode == "progressbar" and self._tty and self._shown is not None:
            self._stream.write("\n")
            self._stream.flush()
            self._shown = None

    def _show(self, status: str, percent: float, transfer: str | None = None) -> None:
        if self._mode == "description":
            if status != "(none)" and (self._shown is None or self._shown[0] != status):
                self._stream.write(status + "\n")
                self._stream.flush()
            self._shown = (status, percent, transfer)
            return
        if self._shown == (status, percent, transfer):
            return
        shown = (status, percent, transfer)
        if self._tty:
            status = " ".join(status.split())
            width = shutil.get_terminal_size().columns - 1
            if width > 20 and len(status) > width - 8:
                status = status[: width - 11] + "..."
            first, second = progress_lines(status, percent, transfer)
            if width > 20 and len(second) > width:
                # A wrapped line would spoil the redraw in place.
                second = second[:width]
            prefix = "" if self._shown is None else _UP_AND_CLEAR
            self._stream.write(f"{prefix}{first}\n{_CLEAR}{second}")
        else:
            first, second = progress_lines(status, percent, transfer)
            self._stream.write(f"{first}\n{second}\n")
        self._stream.flush()
        self._shown = shown
