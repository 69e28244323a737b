"""Task events as data: positions in the log, event kinds, and what a stream may carry.

A position orders every event of the log: ``(xid, id)``, the writing transaction's id and
the event's sequence number (see migrations/0014_task_events.sql for why both). Its text
form ``"<xid>-<id>"`` is the SSE ``id:`` a client sends back as ``Last-Event-ID``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_POSITION = re.compile(r"(?P<xid>[0-9]{1,19})-(?P<id>[0-9]{1,19})")
_MAX = 2**63 - 1
_AGENT_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,62}")

LIFECYCLE_KINDS = frozenset(
    {
        "created",
        "debounced",
        "started",
        "step",
        "llm_call",
        "retried",
        "snoozed",
        "released",
        "succeeded",
        "dead",
        "cancelled",
        "replayed",
        "waiting",
        "signal",
        "wait_timed_out",
    }
)
"""Kinds the queue writes itself; an agent's own events (``ctx.emit``) may not take them."""

FINAL_KINDS = frozenset({"succeeded", "dead", "cancelled"})
"""Kinds after which a task has no more events: a task's stream ends with one of them."""


@dataclass(frozen=True, order=True, slots=True)
class EventPosition:
    """Where an event sits in the log; later events compare greater."""

    xid: int
    id: int

    def __str__(self) -> str:
        return f"{self.xid}-{self.id}"

    @classmethod
    def parse(cls, text: str) -> EventPosition:
        """The position ``str()`` gave; ValueError saying what is wrong otherwise."""
        match = _POSITION.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"an event id looks like '<number>-<number>' (the id: field of an event), "
                f"not {text[:80]!r}"
            )
        xid, event_id = int(match["xid"]), int(match["id"])
        if xid > _MAX or event_id > _MAX:
            raise ValueError(f"event id {text[:80]!r} is out of range")
        return cls(xid, event_id)


ORIGIN = EventPosition(0, 0)
"""Before every event: a stream from here replays the whole log that retention kept."""


def check_agent_kind(kind: str) -> str:
    """``kind`` if an agent may emit it: lower case, 1-63 characters, not a lifecycle kind."""
    if not isinstance(kind, str) or _AGENT_KIND.fullmatch(kind) is None:
        raise ValueError(
            f"an event kind is 1-63 characters of a-z, 0-9, '_', '.', '-', starting with a "
            f"letter; got {str(kind)[:80]!r}"
        )
    if kind in LIFECYCLE_KINDS:
        raise ValueError(
            f"event kind {kind!r} is written by Conveyor itself; pick another name "
            f"(reserved: {', '.join(sorted(LIFECYCLE_KINDS))})"
        )
    return kind


def is_final(kind: str) -> bool:
    """Whether an event of ``kind`` is the last of its task's log."""
    return kind in FINAL_KINDS


CHUNK_SEQ_MAX = 2**31 - 1
"""The largest ``seq`` of a live-output row (``task_chunks.seq`` is an ``integer``)."""


def parse_chunk_cursor(text: str) -> tuple[int, int]:
    """The ``(run, seq)`` of a live-output event id ``"<run>-<seq>"``; ValueError otherwise.

    Same text form as an event position; kept apart because the two never mix.
    """
    try:
        position = EventPosition.parse(text)
    except ValueError:
        raise ValueError(
            f"a live-output event id looks like '<number>-<number>' (the id: field of a "
            f"chunk), not {text[:80]!r}"
        ) from None
    if position.id > CHUNK_SEQ_MAX:
        # task_chunks.seq is an integer: a larger one would fail the hub's one read for
        # every viewer of the process, not just this client's
        raise ValueError(f"live-output event id {text[:80]!r} is out of range")
    return (position.xid, position.id)
