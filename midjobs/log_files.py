"""
Where a job's log file is: derived from the job's id, never read from a record.

A record's C{logs_path} is shown to clients (C{docs/protocol.rst}, "The job record"), but the file
the daemon reads, follows, serves or deletes for job C{id} is always
L{log_file} of the logs directory and that id: a path stored in the database
(which a restored backup could have crafted) is never opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .logs import logger

__all__ = ["log_file", "remove_log_files"]

log = logger(__name__)


def log_file(logs_dir: Path, job_id: int) -> Path:
    """
    The log file of job C{job_id} in C{logs_dir}: C{<logs_dir>/<job_id>.log}.

    @raise ValueError: C{job_id} is not a positive integer.
    """
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
        raise ValueError(f"not a job id: {job_id!r}")
    return logs_dir / f"{job_id}.log"


def remove_log_files(logs_dir: Path, job_ids: Iterable[int]) -> int:
    """
    Delete the log files of the jobs C{job_ids} (L{log_file}): their
    history is gone.  A job without one is skipped; a file that cannot be
    deleted is logged and skipped.  Blocking: call it in a thread.

    @return: how many files were deleted.
    """
    removed = 0
    for job_id in job_ids:
        path = log_file(logs_dir, job_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warn("Cannot delete {path}: {error}", path=str(path), error=e.strerror)
            continue
        removed += 1
    return removed
