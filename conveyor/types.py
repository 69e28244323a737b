"""Leaf types shared by every layer: task states, priorities and ids.

This module imports nothing of conveyor, so any module may import it.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import NewType

TaskId = NewType("TaskId", int)
"""A task's id: a bigint from one sequence, stable from enqueue to history and replay."""

TenantId = NewType("TenantId", str)
"""A tenant's id: a short slug such as ``acme`` (letters, digits, ``_``, ``-``, ``.``)."""


class TaskState(StrEnum):
    """Where a task is in its life (see docs/state_machine.md)."""

    SCHEDULED = "scheduled"
    """Waiting for its ``run_at`` (a delay or a retry backoff)."""
    QUEUED = "queued"
    """Ready to be claimed."""
    RUNNING = "running"
    """Claimed by a worker and held under a lease."""
    WAITING = "waiting"
    """Suspended by ``ctx.wait_for`` until a signal or its deadline; holds no worker slot
    and no lease (``waiting_for`` and ``wait_until`` say what for and until when)."""
    SUCCEEDED = "succeeded"
    """Finished with a result (in ``task_history``)."""
    DEAD = "dead"
    """Failed for good: a permanent error or attempts exhausted (the dead-letter queue)."""
    CANCELLED = "cancelled"
    """Cancelled before it could finish."""

    @property
    def is_terminal(self) -> bool:
        """True for the states that live in ``task_history``."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED})
ACTIVE_STATES = frozenset(
    {TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING, TaskState.WAITING}
)


class Priority(IntEnum):
    """Named priorities; any whole number from 1 (most urgent) to 10 is accepted."""

    URGENT = 1
    NORMAL = 5
    BATCH = 10


MIN_PRIORITY = 1
MAX_PRIORITY = 10
