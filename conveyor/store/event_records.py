"""The event log's records: an event as read, a filter over a tenant's events, and an
agent's own event to write. Driver-free, like ``records.py``: ``ports.py`` names them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.core.events import EventPosition


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One event of a task's log."""

    position: EventPosition
    at: datetime
    tenant_id: str
    task_id: int
    queue: str
    group_id: str | None
    kind: str
    attempt: int | None
    data: Any

    def to_json(self) -> dict[str, Any]:
        """The event as the API sends it (the SSE ``data:`` of the event)."""
        return {
            "id": str(self.position),
            "task_id": self.task_id,
            "kind": self.kind,
            "at": self.at.isoformat(),
            "queue": self.queue,
            "group_id": self.group_id,
            "attempt": self.attempt,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Narrows a tenant's events: every field set must match."""

    group_id: str | None = None
    queue: str | None = None
    task_id: int | None = None

    def matches(self, event: TaskEvent) -> bool:
        """Whether ``event`` passes (for events already read, e.g. fanned out in memory)."""
        return (
            (self.group_id is None or event.group_id == self.group_id)
            and (self.queue is None or event.queue == self.queue)
            and (self.task_id is None or event.task_id == self.task_id)
        )


@dataclass(frozen=True, slots=True)
class LogHorizon:
    """Where the log stands: events of transactions below ``horizon`` are final (readable
    and complete); every transaction committed so far has an id below ``next_xid``."""

    horizon: int
    next_xid: int

    def covers(self, earlier: LogHorizon) -> bool:
        """Whether every transaction committed before ``earlier`` was taken is now final."""
        return self.horizon >= earlier.next_xid


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An agent's own event (``ctx.emit``)."""

    tenant_id: str
    task_id: int
    queue: str
    group_id: str | None
    kind: str
    attempt: int
    data: Any


@dataclass(frozen=True, slots=True)
class LiveChunk:
    """A slice of a running task's LLM output (``kind`` "chunk"), or the end of one
    streamed call ("end"). Ordered by (run, seq) within the task: ``run`` is the lease token
    of the run that produced it (a later run has a greater one), ``seq`` counts within it."""

    task_id: int
    run: int
    seq: int
    kind: str
    text: str
    tenant_id: str = ""

    @property
    def cursor(self) -> tuple[int, int]:
        """Where a viewer that has this chunk resumes: after (run, seq)."""
        return (self.run, self.seq)
