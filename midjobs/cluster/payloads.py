"""
What the nodes of a cluster tell each other of their jobs on the channel
L{JOBS_CHANNEL}: NOTIFY payloads, packed and read as pure functions.

A payload is C{{"n": <node>, "e": [<item>, ...]}}, each item
C{[kind, job id, rev, record or null]} (L{JobItem}), or C{["l", job id,
size, final]} for a log that grew (L{LogItem}).  A payload stays under
L{MAX_PAYLOAD} bytes (PostgreSQL refuses 8 000); a record that does not fit
in one goes as C{null}, and its receiver reads it from the job store.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Iterable, Sequence

import attrs

from .. import wire_json
from ..lifecycle import JobRecord
from ..store.jobs import encode

__all__ = [
    "CATALOGUE_CHANNEL",
    "JOBS_CHANNEL",
    "MAX_PAYLOAD",
    "ItemKind",
    "JobItem",
    "LogItem",
    "Payload",
    "node_channel",
    "pack",
    "sender",
    "unpack",
]

#: The channel every node's job events go to.
JOBS_CHANNEL = "midjobs_jobs"

#: The channel that tells of users and API keys changed or deleted, and web
#: sessions ended, on a node: C{{"n": node, "k": "user", "api_key" or "web_session", "i": id}}.
CATALOGUE_CHANNEL = "midjobs_catalogue"

#: How every payload begins: its sender's name, then (L{_ITEMS}) its items.
_HEAD = '{"n":"'
_ITEMS = ',"e":['

#: The most bytes of one payload (PostgreSQL's limit is 8 000, less one).
MAX_PAYLOAD = 7900


def node_channel(node: str) -> str:
    """
    The channel that wakes C{node} to read the commands addressed to it.
    """
    return f"midjobs_node_{node}"


class ItemKind(enum.Enum):
    """
    What an item tells; the value is its mark in a payload.

    @cvar ADDED: a job was queued (C{core.get_jobs} C{added}).
    @cvar CHANGED: it changed: started, progress (C{changed}).
    @cvar ENDED: it ended; the record is its final one (C{changed}).
    @cvar LOG: its log grew to C{size} bytes in the job store (C{final}: all of it).
    """

    ADDED = "a"
    CHANGED = "c"
    ENDED = "e"
    LOG = "l"

    @property
    def event(self) -> str:
        """
        The C{core.get_jobs} message it is told as.
        """
        return "added" if self is ItemKind.ADDED else "changed"


@attrs.frozen
class JobItem:
    """
    One job's addition, change or end.

    @ivar rev: the sender's revision: a later item of the same job has a
        greater one.
    @ivar record: the job's record, or C{None} if it did not fit.
    """

    kind: ItemKind
    job_id: int
    rev: int
    record: JobRecord | None


@attrs.frozen
class LogItem:
    """
    A job's log is C{size} bytes long in the job store now; C{final} once
    the job ended and its whole log is there.
    """

    job_id: int
    size: int
    final: bool = False


Item = JobItem | LogItem


@attrs.frozen
class Payload:
    """
    One notification: who sent it and its items, in the order they happened.
    """

    node: str
    items: Sequence[Item]


def _item(item: Item, record: str | None) -> str:
    # The marks are letters and the rest numbers: written as they are, no encoder needed.
    if isinstance(item, LogItem):
        return f'["{ItemKind.LOG.value}",{int(item.job_id)},{int(item.size)},{"true" if item.final else "false"}]'
    return f'["{item.kind.value}",{int(item.job_id)},{int(item.rev)},{record if record is not None else "null"}]'


def pack(node: str, items: Iterable[Item], limit: int = MAX_PAYLOAD) -> list[str]:
    """
    The payloads that carry C{items} from C{node}, in order, each of at most
    C{limit} bytes.  A record that would not fit in a payload of its own goes
    as C{null}.
    """
    head = f'{{"n":{json.dumps(node)},"e":['
    room = limit - len(head.encode()) - 2
    payloads: list[str] = []
    parts: list[str] = []
    size = 0
    # A job added and ended since the last send has one record for both items: encoded once.
    encoded: dict[int, str] = {}
    for item in items:
        record = None
        if isinstance(item, JobItem) and item.record is not None:
            record = encoded.get(id(item.record))
            if record is None:
                record = encoded[id(item.record)] = encode(item.record)
        text = _item(item, record)
        # The wire JSON is ASCII (non-ASCII characters are escaped): as many bytes as characters.
        if len(text) > room:
            text = _item(item, None)
        length = len(text) + (1 if parts else 0)
        if parts and size + length > room:
            payloads.append(head + ",".join(parts) + "]}")
            parts, size = [], 0
            length -= 1
        parts.append(text)
        size += length
    if parts:
        payloads.append(head + ",".join(parts) + "]}")
    return payloads


def sender(payload: str) -> str | None:
    """
    The node that sent C{payload}, read from its head alone (its items stay
    unread): what a node needs to pass over its own notifications, which
    PostgreSQL delivers to it too.  C{None} if the head is not one L{pack}
    writes with a plain name (no escapes): then only L{unpack} can tell.
    """
    if not payload.startswith(_HEAD):
        return None
    end = payload.find('"', len(_HEAD))
    if end < 0 or "\\" in payload[len(_HEAD) : end] or not payload.startswith(_ITEMS, end + 1):
        return None
    return payload[len(_HEAD) : end]


def unpack(payload: str) -> Payload:
    """
    Read one payload.

    @raise ValueError: it is not one that L{pack} makes.
    """
    data: Any = wire_json.loads(payload)
    if not isinstance(data, dict) or not isinstance(data.get("n"), str) or not isinstance(data.get("e"), list):
        raise ValueError("not a jobs payload")
    items: list[Item] = []
    for raw in data["e"]:
        if not isinstance(raw, list) or len(raw) < 3 or not isinstance(raw[1], int) or not isinstance(raw[2], int):
            raise ValueError(f"not a job item: {raw!r}")
        kind = ItemKind(raw[0])
        if kind is ItemKind.LOG:
            items.append(LogItem(raw[1], raw[2], len(raw) > 3 and raw[3] is True))
            continue
        record = raw[3] if len(raw) > 3 else None
        if record is not None and not isinstance(record, dict):
            raise ValueError(f"not a job record: {record!r}")
        items.append(JobItem(kind, raw[1], raw[2], record))
    return Payload(data["n"], items)
