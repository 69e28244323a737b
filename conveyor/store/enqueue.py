"""Enqueue: one statement for a whole batch, idempotency keys, one NOTIFY per queue."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.errors import StoreError, UnknownTenant
from conveyor.store.connection import Conn
from conveyor.store.params import NewTask
from conveyor.store.records import EnqueueResult
from conveyor.store.sql import q


async def enqueue_batch(conn: Conn, tasks: Sequence[NewTask]) -> list[EnqueueResult]:
    """Insert ``tasks`` in the caller's transaction; results follow the input order.

    A task whose idempotency key is already taken (by an earlier call, a concurrent one, or
    an earlier task of the same batch) creates nothing and reports the first task's id.
    """
    if not tasks:
        return []
    tenants = sorted({task.tenant_id for task in tasks})
    unknown = await conn.fetchval(q("unknown_tenants"), tenants)
    if unknown:
        raise UnknownTenant(list(unknown))

    ids: list[int] = list(await conn.fetchval(q("allocate_task_ids"), len(tasks)))
    created = [True] * len(tasks)
    keyed = [i for i, task in enumerate(tasks) if task.idempotency_key is not None]
    if keyed:
        await _resolve_idempotency_keys(conn, tasks, keyed, ids, created)

    fresh = [i for i in range(len(tasks)) if created[i]]
    if fresh:
        await _insert(conn, [tasks[i] for i in fresh], [ids[i] for i in fresh])
        # Delivered at commit, once per queue; a delayed task's wake-up is spurious but
        # cheap, while a missed one would cost a poll period.
        await conn.execute(q("notify_queues"), [tasks[i].queue for i in fresh])
    return [EnqueueResult(task_id=ids[i], created=created[i]) for i in range(len(tasks))]


async def _resolve_idempotency_keys(
    conn: Conn,
    tasks: Sequence[NewTask],
    keyed: list[int],
    ids: list[int],
    created: list[bool],
) -> None:
    """Take free keys for this batch; point taken ones at the task that holds them."""
    first_of: dict[tuple[str, str], int] = {}
    for i in keyed:
        key = (tasks[i].tenant_id, tasks[i].idempotency_key or "")
        if key in first_of:  # a repeat within this batch follows its first occurrence
            created[i] = False
        else:
            first_of[key] = i
    firsts = list(first_of.values())
    taken = await conn.fetch(
        q("reserve_idempotency_keys"),
        [tasks[i].tenant_id for i in firsts],
        [tasks[i].idempotency_key for i in firsts],
        [ids[i] for i in firsts],
    )
    reserved = {row["task_id"] for row in taken}
    missing = [i for i in firsts if ids[i] not in reserved]
    existing: dict[tuple[str, str], int] = {}
    if missing:
        # A new statement sees keys committed by concurrent submitters while we waited.
        rows = await conn.fetch(
            q("existing_idempotency_keys"),
            [tasks[i].tenant_id for i in missing],
            [tasks[i].idempotency_key for i in missing],
        )
        existing = {(row["tenant_id"], row["key"]): row["task_id"] for row in rows}
        for i in missing:
            holder = existing.get((tasks[i].tenant_id, tasks[i].idempotency_key or ""))
            if holder is None:  # pruned by retention between the two statements
                raise StoreError("an idempotency key changed hands during enqueue; submit again")
            created[i] = False
            ids[i] = holder
    for i in keyed:
        first = first_of[(tasks[i].tenant_id, tasks[i].idempotency_key or "")]
        if i != first:
            ids[i] = ids[first]


async def _insert(conn: Conn, tasks: Sequence[NewTask], ids: list[int]) -> None:
    await conn.execute(
        q("insert_tasks"),
        ids,
        [t.tenant_id for t in tasks],
        [t.queue for t in tasks],
        [t.priority for t in tasks],
        [t.run_at for t in tasks],
        [t.max_attempts for t in tasks],
        [t.timeout_seconds for t in tasks],
        [t.idempotency_key for t in tasks],
        [t.parent_id for t in tasks],
        [t.group_id for t in tasks],
        [t.payload for t in tasks],
        [t.trace_context for t in tasks],
    )
