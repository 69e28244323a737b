"""Finishing leased tasks (succeed, die, cancel), retrying them, and cancelling by id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.errors import TaskNotFound
from conveyor.store.connection import Conn
from conveyor.store.params import Finish, RetryLease, TaskListParams
from conveyor.store.records import TaskRecord
from conveyor.store.sql import q
from conveyor.types import TaskState


@dataclass(frozen=True, slots=True)
class FinishResult:
    """Ids refused for a lost lease, and the (tenant, group) pairs of the tasks finished."""

    refused: set[int]
    groups: set[tuple[str, str]]


async def finish(conn: Conn, finishes: Sequence[Finish]) -> FinishResult:
    """Move leased tasks to history in one statement."""
    if not finishes:
        return FinishResult(set(), set())
    rows = await conn.fetch(
        q("finish_batch"),
        [f.lease.task_id for f in finishes],
        [f.lease.lease_token for f in finishes],
        [f.state.value for f in finishes],
        [f.result for f in finishes],  # one JSON document each (see finish_batch)
        [f.error for f in finishes],
    )
    return FinishResult(
        refused={f.lease.task_id for f in finishes} - {row["id"] for row in rows},
        groups={(row["tenant_id"], row["group_id"]) for row in rows if row["group_id"]},
    )


async def retry(conn: Conn, retries: Sequence[RetryLease]) -> set[int]:
    """Send leased tasks back to wait; returns the ids refused (lease lost)."""
    if not retries:
        return set()
    async with conn.transaction():
        rows = await conn.fetch(
            q("retry_batch"),
            [r.lease.task_id for r in retries],
            [r.lease.lease_token for r in retries],
            [max(0.0, r.delay) for r in retries],
            [r.error for r in retries],  # one JSON document
            [not r.count_attempt for r in retries],
        )
        ready = [row["queue"] for row in rows if row["state"] == TaskState.QUEUED]
        if ready:
            await conn.execute(q("notify_queues"), ready)
    return {r.lease.task_id for r in retries} - {row["id"] for row in rows}


async def cancel(conn: Conn, task_id: int, tenant_id: str | None, reason: str) -> TaskState:
    """Cancel a task: at once if it waits, by request if it runs.

    With ``tenant_id`` only that tenant's task is found (the statements require it); None
    is an operator's call on any tenant's task. Returns CANCELLED when it is cancelled now,
    RUNNING when its worker was asked to stop, or the terminal state it had already reached.
    Raises TaskNotFound.
    """
    key = _key(task_id, tenant_id)
    async with conn.transaction():
        if await conn.fetchval(_q("cancel_waiting", tenant_id), *key, reason) is not None:
            return TaskState.CANCELLED
        if await conn.fetchrow(_q("request_cancel_running", tenant_id), *key) is not None:
            await conn.execute(q("notify_cancel"), str(task_id))
            return TaskState.RUNNING
    record = await get_task(conn, task_id, tenant_id)
    return record.state


async def get_task(conn: Conn, task_id: int, tenant_id: str | None) -> TaskRecord:
    """The task, active or finished; TaskNotFound when absent or (with ``tenant_id``)
    another tenant's. None is an operator's read of any tenant's task."""
    key = _key(task_id, tenant_id)
    row = await conn.fetchrow(_q("get_active_task", tenant_id), *key)
    if row is None:
        row = await conn.fetchrow(_q("get_finished_task", tenant_id), *key)
    if row is None:
        raise TaskNotFound(task_id)
    return _record(row)


async def list_tasks(conn: Conn, tenant_id: str, query: TaskListParams) -> list[TaskRecord]:
    """A tenant's tasks, active and finished, newest first (see ``TaskListParams``)."""
    state = None if query.state is None else str(query.state)
    rows = await conn.fetch(
        q("list_tasks"),
        tenant_id,
        query.before_id,
        query.queue,
        query.group_id,
        state,
        query.limit,
        query.created_after,
        query.created_before,
    )
    return [_record(row) for row in rows]


def _q(name: str, tenant_id: str | None) -> str:
    # Two statements per read: the tenant's, which filters by a required tenant id, and the
    # operator's, which has no tenant filter at all; never one with an optional filter.
    return q(name) if tenant_id is not None else q(f"{name}_any_tenant")


def _key(task_id: int, tenant_id: str | None) -> tuple[object, ...]:
    return (tenant_id, task_id) if tenant_id is not None else (task_id,)


def _record(row: Any) -> TaskRecord:
    values = dict(row)
    values["state"] = TaskState(values["state"])
    return TaskRecord(**values)
