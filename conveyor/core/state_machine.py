"""The legal transitions of a task (drawn in docs/state_machine.md).

The store enforces these in SQL (each statement matches only rows in its source state); this
table is the reference the SQL is reviewed and property-tested against.
"""

from __future__ import annotations

from conveyor.types import TaskState

S = TaskState

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    # enqueue with a delay, or a retry waiting out its backoff
    S.SCHEDULED: frozenset({S.QUEUED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    # running -> queued: lease expired (reaper) or released on graceful shutdown
    # running -> scheduled: retryable error with backoff, or a snooze
    # running -> waiting: ctx.wait_for found no signal yet (the run ends, the slot is freed)
    S.RUNNING: frozenset({S.SUCCEEDED, S.QUEUED, S.SCHEDULED, S.WAITING, S.DEAD, S.CANCELLED}),
    # waiting -> scheduled (run_at = now): the awaited signal came, or the wait's deadline
    # passed; the promoter then makes it ready with a fresh fairness key
    S.WAITING: frozenset({S.SCHEDULED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    # dead -> queued: replay from the dead-letter queue
    S.DEAD: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset(),
}

INITIAL_STATES = frozenset({S.SCHEDULED, S.QUEUED})


def is_legal(source: TaskState, target: TaskState) -> bool:
    """True when a task may move from ``source`` to ``target``."""
    return target in TRANSITIONS[source]


def reachable_from(source: TaskState) -> frozenset[TaskState]:
    """Every state a task in ``source`` can eventually reach (itself excluded unless cyclic)."""
    seen: set[TaskState] = set()
    frontier = list(TRANSITIONS[source])
    while frontier:
        state = frontier.pop()
        if state not in seen:
            seen.add(state)
            frontier.extend(TRANSITIONS[state])
    return frozenset(seen)
