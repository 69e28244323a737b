"""Enqueue: one statement for a whole batch, idempotency keys, one NOTIFY per queue."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from conveyor.errors import IdempotencyConflict, InvalidTask, StoreError
from conveyor.store.admission import check_rules, count_accepted
from conveyor.store.connection import Conn
from conveyor.store.llm_caps import set_task_caps
from conveyor.store.params import NewTask
from conveyor.store.records import EnqueueResult
from conveyor.store.sql import q


async def enqueue_batch(
    conn: Conn, tasks: Sequence[NewTask], *, fair: bool = True
) -> list[EnqueueResult]:
    """Insert ``tasks`` in the caller's transaction; results follow the input order.

    With ``fair`` (the default) each task gets a fairness_key from its tenant's virtual
    clock, so claims interleave tenants by weight instead of serving floods first.

    A task whose idempotency key is already taken (by an earlier call, a concurrent one, or
    an earlier task of the same batch) creates nothing and reports the first task's id; if
    both carry an ``idempotency_fingerprint`` and they differ, IdempotencyConflict is raised
    instead and nothing of the batch is stored.
    """
    if not tasks:
        return []
    if any(t.debounce_key is not None for t in tasks):
        raise InvalidTask("a task with a debounce_key is enqueued with enqueue_debounced")
    rules = await check_rules(conn, tasks)

    ids: list[int] = list(await conn.fetchval(q("allocate_task_ids"), len(tasks)))
    created = [True] * len(tasks)
    keyed = [i for i, task in enumerate(tasks) if task.idempotency_key is not None]
    if keyed:
        await _resolve_idempotency_keys(conn, tasks, keyed, ids, created)

    if keyed:
        fresh = [i for i in range(len(tasks)) if created[i]]
        new_tasks, new_ids = [tasks[i] for i in fresh], [ids[i] for i in fresh]
    else:
        new_tasks, new_ids = list(tasks), ids
    if new_tasks:
        await count_accepted(conn, rules, new_tasks, datetime.now(UTC))
        clocks = await _reserve_fairness(conn, new_tasks, rules) if fair else {}
        if not fair:
            await _ensure_levels(conn, new_tasks)
        await _insert(conn, new_tasks, new_ids, clocks)
        await set_task_caps(conn, new_tasks, new_ids)  # nothing to do unless a task has caps
        # Delivered at commit, once per queue; a delayed task's wake-up is spurious but
        # cheap, while a missed one would cost a poll period.
        await conn.execute(q("notify_queues"), sorted({t.queue for t in new_tasks}))
    return list(map(EnqueueResult, ids, created))


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
            _check_fingerprint(tasks[i], tasks[first_of[key]].idempotency_fingerprint)
            created[i] = False
        else:
            first_of[key] = i
    firsts = list(first_of.values())
    taken = await conn.fetch(
        q("reserve_idempotency_keys"),
        [tasks[i].tenant_id for i in firsts],
        [tasks[i].idempotency_key for i in firsts],
        [ids[i] for i in firsts],
        [tasks[i].idempotency_fingerprint for i in firsts],
    )
    reserved = {row["task_id"] for row in taken}
    missing = [i for i in firsts if ids[i] not in reserved]
    existing: dict[tuple[str, str], Any] = {}
    if missing:
        # A new statement sees keys committed by concurrent submitters while we waited.
        rows = await conn.fetch(
            q("existing_idempotency_keys"),
            [tasks[i].tenant_id for i in missing],
            [tasks[i].idempotency_key for i in missing],
        )
        existing = {(row["tenant_id"], row["key"]): row for row in rows}
        for i in missing:
            holder = existing.get((tasks[i].tenant_id, tasks[i].idempotency_key or ""))
            if holder is None:  # pruned by retention between the two statements
                raise StoreError("an idempotency key changed hands during enqueue; submit again")
            _check_fingerprint(tasks[i], holder["fingerprint"])
            created[i] = False
            ids[i] = holder["task_id"]
    for i in keyed:
        first = first_of[(tasks[i].tenant_id, tasks[i].idempotency_key or "")]
        if i != first:
            ids[i] = ids[first]


def _check_fingerprint(task: NewTask, first: bytes | None) -> None:
    """Refuse a task whose key already took a different request (unknown matches all)."""
    mine = task.idempotency_fingerprint
    if mine is not None and first is not None and bytes(first) != mine:
        raise IdempotencyConflict(task.idempotency_key or "")


async def _insert(
    conn: Conn, tasks: Sequence[NewTask], ids: list[int], clocks: FairnessClocks
) -> None:
    shared = _shared_fields(tasks[0])
    if all(_shared_fields(t) == shared for t in tasks):
        keys = [t.idempotency_key for t in tasks]
        start, step = clocks.get(_level(tasks[0]), (0.0, 0.0))
        await conn.execute(
            q("insert_uniform_tasks"),
            ids,
            *shared,
            keys if any(k is not None for k in keys) else None,
            [t.payload for t in tasks],
            start,
            step,
        )
    else:
        rows = [_row(task_id, t) for task_id, t in zip(ids, tasks, strict=True)]
        if clocks:
            seen: Counter[Level] = Counter()
            now = datetime.now(UTC)
            for row, task in zip(rows, tasks, strict=True):
                if not _ready(task, now):
                    continue  # keyed when it becomes ready (promote_due)
                level = _level(task)
                seen[level] += 1
                start, step = clocks[level]
                row["fairness_key"] = start + seen[level] * step
        await conn.execute(q("insert_tasks"), rows)


Level = tuple[str, str, int]
"""(tenant, queue, priority): the scope of one virtual clock."""

FairnessClocks = dict[Level, tuple[float, float]]
"""Level -> (start of the tenant's clock reservation, 1 / weight)."""


def _level(task: NewTask) -> Level:
    return (task.tenant_id, task.queue, task.priority)


async def _reserve_fairness(
    conn: Conn, tasks: Sequence[NewTask], rules: dict[tuple[str, str], dict[str, Any]]
) -> FairnessClocks:
    """Advance each level's tenant clock by its tasks / weight; where each reservation starts."""
    now = datetime.now(UTC)
    counts = Counter(_level(t) for t in tasks if _ready(t, now))
    if not counts:
        await _ensure_levels(conn, tasks)
        return {}
    levels = sorted(counts)
    steps = {lv: 1.0 / float(rules[(lv[0], lv[1])]["weight"] or 1.0) for lv in levels}
    rows = await conn.fetch(
        q("advance_fairness_clocks"),
        [lv[0] for lv in levels],
        [lv[1] for lv in levels],
        [lv[2] for lv in levels],
        [counts[lv] * steps[lv] for lv in levels],
    )
    starts: FairnessClocks = {}
    for r in rows:
        level = (r["tenant_id"], r["queue"], r["priority"])
        starts[level] = (r["start"], steps[level])
    return starts


def _ready(task: NewTask, now: datetime) -> bool:
    """Whether the task is queued at once; a delayed one takes its key when it is due."""
    return task.run_at is None or task.run_at <= now


async def _ensure_levels(conn: Conn, tasks: Sequence[NewTask]) -> None:
    levels = sorted({(t.queue, t.priority) for t in tasks})
    await conn.execute(q("ensure_queue_levels"), [lv[0] for lv in levels], [lv[1] for lv in levels])


# The fields a uniform batch shares, in the order of insert_uniform_tasks' $2..$10.
_SHARED = (
    "tenant_id",
    "queue",
    "priority",
    "run_at",
    "max_attempts",
    "timeout_seconds",
    "parent_id",
    "group_id",
    "trace_context",
)
_shared_fields = attrgetter(*_SHARED)


def _row(task_id: int, task: NewTask) -> dict[str, Any]:
    """The task as one JSON object for ``insert_tasks``; unset fields are left out."""
    row: dict[str, Any] = {
        "id": task_id,
        "tenant_id": task.tenant_id,
        "queue": task.queue,
        "priority": task.priority,
    }
    if task.payload:
        row["payload"] = task.payload
    if task.run_at is not None:
        row["run_at"] = task.run_at.isoformat()
    for name in _OPTIONAL:
        value = getattr(task, name)
        if value is not None:
            row[name] = value
    return row


_OPTIONAL = (
    "max_attempts",
    "timeout_seconds",
    "idempotency_key",
    "parent_id",
    "group_id",
    "trace_context",
)
