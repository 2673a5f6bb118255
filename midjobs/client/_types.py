"""
Names for the shapes that travel between the client's modules.
"""

from __future__ import annotations

from typing import Any, Callable

#: A job record as C{core.get_jobs} returns it and its events carry (C{docs/protocol.rst}, "The job record").
JobRecord = dict[str, Any]

#: Called with C{(msg, collection, id, fields)} for each C{collection_update} event.
EventCallback = Callable[[str, str, Any, dict[str, Any]], object]

#: Called with the job record on each state or progress change of a job.
JobCallback = Callable[[JobRecord], object]

#: The job states in which a job has ended.
FINAL_STATES = frozenset({"SUCCESS", "FAILED", "ABORTED"})
