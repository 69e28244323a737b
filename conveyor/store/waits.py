"""Durable waits in PostgreSQL: suspend a leased task until a signal, deliver signals, and
end waits whose deadline passed.

The reusable seam under ``ctx.wait_for`` (and under anything else that must let a task
wait without holding a worker: the webhook adapter waits for its callback this way):

- ``suspend``: "this lease waits for signal X until deadline D" (the worker, for a run
  that ended in ``TaskSuspended``);
- ``deliver_signal``: "signal X with this payload for task T" (the API, the CLI);
- ``get_signal``: what a run's ``wait_for(X)`` returns (or that X timed out);
- ``expire_waits``: the maintenance loop's sweep of deadlines.

Why it cannot miss a signal: a delivery locks the task's row before it writes the signal,
and a suspension checks for the signal in a statement of its own after taking the row
(both in one transaction). Whichever takes the row second sees what the first committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.core.json_documents import DocumentProblem, check_document
from conveyor.core.waits import Delivery, Held, check_signal_name, classify_delivery
from conveyor.errors import InvalidSignal, SignalRefused, TaskNotFound
from conveyor.store.connection import Conn
from conveyor.store.engine import PoolEngine
from conveyor.store.params import SuspendLease
from conveyor.store.records import SignalDelivery, SignalRecord
from conveyor.store.sql import q
from conveyor.types import TaskState


async def suspend(conn: Conn, waits: Sequence[SuspendLease]) -> set[int]:
    """Move leased tasks to 'waiting'; the ids refused (lease lost, or cancel requested)."""
    if not waits:
        return set()
    ids = [w.lease.task_id for w in waits]
    async with conn.transaction():
        rows = await conn.fetch(
            q("suspend_leases"),
            ids,
            [w.lease.lease_token for w in waits],
            [w.wait for w in waits],
            [w.timeout for w in waits],
        )
        suspended = [row["id"] for row in rows]
        if suspended:  # a signal that came while the run was ending wakes it at once
            await conn.fetch(q("wake_signalled"), suspended)
    return set(ids) - set(suspended)


async def deliver_signal(
    conn: Conn,
    task_id: int,
    name: str,
    payload: Any,
    tenant_id: str | None,
    *,
    reserved: bool = False,
) -> SignalDelivery:
    """Store signal ``name`` for the task and wake it if it waits for it.

    With ``tenant_id`` only that tenant's task is found; None is an operator's delivery.
    ``reserved`` admits Conveyor's own ``conveyor:`` names. Raises InvalidSignal,
    TaskNotFound, or SignalRefused (finished task, timed-out wait, another payload).
    """
    try:
        check_signal_name(name, reserved=reserved)
        check_document(payload, path="payload")
    except (ValueError, DocumentProblem) as exc:
        raise InvalidSignal(str(exc)) from None
    key = (tenant_id, task_id) if tenant_id is not None else (task_id,)
    suffix = "" if tenant_id is not None else "_any_tenant"
    async with conn.transaction():
        task = await conn.fetchrow(q(f"lock_signalled_task{suffix}"), *key)
        if task is None:
            final = await conn.fetchval(q(f"finished_task_state{suffix}"), *key)
            if final is None:
                raise TaskNotFound(task_id)
            raise SignalRefused(
                task_id,
                name,
                "finished",
                f"task {task_id} has finished ({final}): a signal reaches only a task that "
                "has not finished",
            )
        owner = task["tenant_id"]
        if await conn.fetchval(q("insert_signal"), owner, task_id, name, payload) is None:
            held = await _held(conn, owner, task_id, name)
            decision = classify_delivery(
                None if held is None else Held(held.payload, held.timed_out), payload
            )
            if decision is Delivery.DUPLICATE:
                return SignalDelivery(task_id, name, TaskState(task["state"]), False, True)
            raise _refusal(task_id, name, decision)
        resumed = False
        if task["state"] == TaskState.WAITING and task["waiting_for"] == name:
            resumed = await conn.fetchval(q("wake_on_signal"), task_id, name) is not None
        state = TaskState.SCHEDULED if resumed else TaskState(task["state"])
        return SignalDelivery(task_id, name, state, resumed, False)


def _refusal(task_id: int, name: str, decision: Delivery) -> SignalRefused:
    if decision is Delivery.TOO_LATE:
        return SignalRefused(
            task_id,
            name,
            str(decision),
            f"the wait of task {task_id} for signal {name!r} timed out before this signal "
            "came; the task has been told so (WaitTimedOut)",
        )
    return SignalRefused(
        task_id,
        name,
        str(decision),
        f"signal {name!r} was already delivered to task {task_id} with another payload; the "
        "first one holds (send a signal of another name to say something new)",
    )


async def get_signal(conn: Conn, tenant_id: str, task_id: int, name: str) -> SignalRecord | None:
    """What the task holds under ``name``: a payload, a timeout, or nothing (None)."""
    return await _held(conn, tenant_id, task_id, name)


async def _held(conn: Conn, tenant_id: str, task_id: int, name: str) -> SignalRecord | None:
    row = await conn.fetchrow(q("get_signal"), tenant_id, task_id, name)
    return None if row is None else SignalRecord(**dict(row))


async def expire_waits(conn: Conn, limit: int) -> list[int]:
    """End up to ``limit`` waits past their deadline (recording the timeout); their ids."""
    rows = await conn.fetch(q("expire_waits"), limit)
    return [row["id"] for row in rows]


class WaitOperations(PoolEngine):
    """The engine's durable-wait operations (``PostgresStore`` inherits them)."""

    async def suspend(self, waits: Sequence[SuspendLease]) -> set[int]:
        """Let leased tasks wait for a signal, freeing their leases; the ids refused
        (lease lost, or a cancel was requested: the reaper then cancels the task)."""
        refused = await self._with_partitions(lambda: self._run(lambda c: suspend(c, waits)))
        self._events_written()
        return refused

    async def deliver_signal(
        self,
        task_id: int,
        name: str,
        payload: Any = None,
        *,
        tenant_id: str | None = None,
        reserved: bool = False,
    ) -> SignalDelivery:
        """Deliver signal ``name`` (write-once) to a task, waking it if it waits for it.

        Without ``tenant_id`` this is an operator's delivery to any tenant's task (CLI);
        tenant-facing code delivers through ``for_tenant(...).signal``.
        """
        delivery = await self._with_partitions(
            lambda: self._run(
                lambda c: deliver_signal(c, task_id, name, payload, tenant_id, reserved=reserved)
            )
        )
        self._events_written()
        return delivery

    async def get_signal(self, tenant_id: str, task_id: int, name: str) -> SignalRecord | None:
        """The signal the task holds under ``name`` (or its wait's timeout); None if none."""
        return await self._run(lambda c: get_signal(c, tenant_id, task_id, name))

    async def expire_waits(self, limit: int = 1000) -> list[int]:
        """End waits whose deadline passed (maintenance); the task ids."""
        expired = await self._with_partitions(lambda: self._run(lambda c: expire_waits(c, limit)))
        if expired:
            self._events_written()
        return expired
