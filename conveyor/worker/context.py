"""TaskContext: what a handler gets besides its payload."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog

from conveyor.store.records import ClaimedTask


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """The running task as a handler sees it."""

    id: int
    tenant_id: str
    queue: str
    attempt: int
    max_attempts: int
    group_id: str | None
    parent_id: int | None


class TaskContext:
    """Handed to every handler: the task's identity, a bound logger, and progress."""

    def __init__(self, claimed: ClaimedTask) -> None:
        self.task = TaskInfo(
            id=claimed.id,
            tenant_id=claimed.tenant_id,
            queue=claimed.queue,
            attempt=claimed.attempts,
            max_attempts=claimed.max_attempts,
            group_id=claimed.group_id,
            parent_id=claimed.parent_id,
        )
        self.log: Any = structlog.get_logger("conveyor.task").bind(
            tenant_id=claimed.tenant_id,
            task_id=claimed.id,
            queue=claimed.queue,
            group_id=claimed.group_id,
            trace_id=(claimed.trace_context or {}).get("traceparent"),
        )
        self.last_progress = time.monotonic()

    def heartbeat(self) -> None:
        """Report progress; the worker's next heartbeat renews this task's lease."""
        self.last_progress = time.monotonic()
