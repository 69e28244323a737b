"""Debounced enqueue: a burst of submits with one debounce key leaves one waiting task.

A task with a ``debounce_key`` is added as *scheduled* at its ``run_at`` (the submitter's
now + window). Until a worker claims it, a submit of the same tenant, queue and key
replaces its payload (the latest wins) and returns its id instead of adding a task; after
the claim, the next submit adds a new task. So a burst of triggers within the window runs
once, with the last trigger's payload; a steady stream runs at most once per window (the
replaced task keeps its first run_at). The statement is ``debounce_task``.

Plan rules apply to every submit; only a submit that adds a task counts toward the monthly
limits (a replacement adds no work). A submit's LLM caps go to the task it adds or
replaces (one without caps leaves the waiting task's).
"""

from __future__ import annotations

from datetime import UTC, datetime

from conveyor.errors import InvalidTask
from conveyor.store.admission import check_rules, count_accepted
from conveyor.store.connection import Conn
from conveyor.store.llm_caps import set_task_caps
from conveyor.store.params import NewTask
from conveyor.store.records import EnqueueResult
from conveyor.store.sql import q


async def enqueue_debounced(conn: Conn, task: NewTask) -> EnqueueResult:
    """Add ``task`` or replace the payload of its waiting twin, in the caller's transaction.

    ``task`` needs a ``debounce_key`` and a ``run_at``; it may not carry an idempotency key
    (the debounce key already decides what a repeat does).
    """
    if task.debounce_key is None or task.run_at is None:
        raise InvalidTask("a debounced task needs a debounce_key and a run_at")
    if task.idempotency_key is not None or task.parent_id is not None:
        raise InvalidTask("a debounced task takes no idempotency key and no parent")
    rules = await check_rules(conn, [task])
    row = await conn.fetchrow(
        q("debounce_task"),
        task.tenant_id,
        task.queue,
        task.priority,
        task.run_at,
        task.max_attempts,
        task.timeout_seconds,
        task.group_id,
        task.payload,
        task.trace_context,
        task.debounce_key,
    )
    assert row is not None
    if row["created"]:
        await count_accepted(conn, rules, [task], datetime.now(UTC))
        await conn.execute(q("ensure_queue_levels"), [task.queue], [task.priority])
    await set_task_caps(conn, [task], [row["id"]])  # a replacing submit's caps win too
    return EnqueueResult(row["id"], row["created"], replaced=not row["created"])
