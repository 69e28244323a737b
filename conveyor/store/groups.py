"""Campaigns (groups): status counts, and a follow-up task enqueued once at completion.

A group is complete when none of its tasks waits or runs and at least one has finished.
The check runs right after a batch of its tasks finishes, in a transaction that locks the
group's row first: when the last two tasks finish at the same moment on two workers, the
second check waits for the first to commit and then sees both tasks finished, so exactly
one of them completes the group (like a chord). A maintenance sweep repeats the check for
open groups, which covers a worker that died between finishing a task and checking.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from conveyor.core.llm_caps import LLMCaps
from conveyor.errors import GroupNotFound
from conveyor.store.connection import Conn
from conveyor.store.enqueue import enqueue_batch
from conveyor.store.llm_caps import set_group_caps
from conveyor.store.params import NewTask
from conveyor.store.records import GroupStatus
from conveyor.store.sql import q
from conveyor.types import TaskState


def follow_up_spec(task: NewTask) -> dict[str, Any]:
    """What a group stores to enqueue at completion."""
    return {
        "queue": task.queue,
        "payload": task.payload,
        "priority": task.priority,
        "max_attempts": task.max_attempts,
        "timeout_seconds": task.timeout_seconds,
    }


async def create_group(
    conn: Conn,
    tenant_id: str,
    group_id: str,
    on_complete: NewTask | None,
    caps: LLMCaps | None = None,
) -> None:
    """Register a group (and its follow-up); registering again replaces the follow-up.
    ``caps`` given sets (or replaces) the group's own LLM caps (``llm_caps.py``)."""
    spec = follow_up_spec(on_complete) if on_complete is not None else None
    await conn.execute(q("create_group"), tenant_id, group_id, spec)
    if caps is not None:
        await set_group_caps(conn, tenant_id, group_id, caps)


async def complete_groups(conn: Conn, pairs: Iterable[tuple[str, str]]) -> list[int]:
    """Complete the given groups that are done; the ids of the follow-up tasks enqueued."""
    ordered = sorted(set(pairs))
    if not ordered:
        return []
    tenants, groups = [p[0] for p in ordered], [p[1] for p in ordered]
    if not await conn.fetchval(q("any_open_group"), tenants, groups):
        return []  # the common case: tasks of groups nobody registered
    follow_ups: list[int] = []
    async with conn.transaction():
        if not await conn.fetch(q("lock_open_groups"), tenants, groups):
            return []  # no registered, open group among them
        for row in await conn.fetch(q("complete_groups"), tenants, groups):
            spec = row["on_complete"]
            if spec is None:
                continue
            task = NewTask(
                queue=spec["queue"],
                payload={**spec["payload"], "_group_id": row["group_id"]},
                tenant_id=row["tenant_id"],
                priority=spec["priority"],
                max_attempts=spec["max_attempts"],
                timeout_seconds=spec["timeout_seconds"],
                idempotency_key=f"group-complete:{row['group_id']}",
            )
            [result] = await enqueue_batch(conn, [task])
            await conn.execute(
                q("set_follow_up"), row["tenant_id"], row["group_id"], result.task_id
            )
            follow_ups.append(result.task_id)
    return follow_ups


async def sweep_open_groups(conn: Conn, limit: int) -> list[int]:
    """Check the oldest open groups (the fallback of the completion check)."""
    rows = await conn.fetch(q("open_groups"), limit)
    return await complete_groups(conn, [(r["tenant_id"], r["group_id"]) for r in rows])


async def group_status(conn: Conn, tenant_id: str, group_id: str) -> GroupStatus:
    """Counts by state of a group's tasks; GroupNotFound when the group is unknown."""
    counts: dict[TaskState, int] = {}
    for row in await conn.fetch(q("group_counts"), tenant_id, group_id):
        state = TaskState(row["state"])
        counts[state] = counts.get(state, 0) + row["n"]
    group = await conn.fetchrow(q("get_group"), tenant_id, group_id)
    if group is None and not counts:
        raise GroupNotFound(tenant_id, group_id)
    return GroupStatus(
        tenant_id=tenant_id,
        group_id=group_id,
        counts=counts,
        completed_at=group["completed_at"] if group else None,
        follow_up_id=group["follow_up_id"] if group else None,
    )
