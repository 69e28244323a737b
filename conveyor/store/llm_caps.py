"""Runaway guards in PostgreSQL: the counters of capped task runs and groups (``llm_caps``).

A reservation takes one attempt's worst case in its run's row and its group's row in one
statement that refuses what does not fit (``conveyor_reserve_llm_caps``, migration 0016),
so however many workers call for one group at once, the group never goes past its cap. The
settle after the attempt gives the reservation back and counts what it used. The caps a
row holds itself are those set at submit (a task) or at the group's creation; the role's
and the plan's come with each reservation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from conveyor.core.llm_caps import CapScope, CapUsage, LLMCaps
from conveyor.store.connection import Conn
from conveyor.store.params import CapReserve, CapSettle, NewTask
from conveyor.store.records import CapCounter, CapReservation
from conveyor.store.sql import q


def caps_from(row: Mapping[str, Any], prefix: str) -> LLMCaps:
    """The caps in a row's ``<prefix>calls``, ``<prefix>tokens``, ``<prefix>cost`` columns."""
    cost = row[f"{prefix}cost"]
    return LLMCaps(
        calls=row[f"{prefix}calls"],
        tokens=row[f"{prefix}tokens"],
        cost=None if cost is None else Decimal(cost),
    )


async def reserve(conn: Conn, ask: CapReserve) -> CapReservation:
    """Reserve the attempt's worst case in its run's and group's rows, if it fits both."""
    run, group = ask.run.limits(), ask.group.limits()
    row = await conn.fetchrow(
        q("reserve_llm_caps"),
        ask.tenant_id,
        None if ask.task_id is None else str(ask.task_id),
        ask.group_id,
        ask.provider,
        ask.model,
        ask.prompt_tokens,
        ask.completion_tokens,
        run.calls,
        run.tokens,
        run.cost,
        ask.run.document(),
        group.calls,
        group.tokens,
        group.cost,
        ask.group.document(),
    )
    assert row is not None  # the function always returns one row
    return CapReservation(
        estimate=Decimal(row["estimate"]),
        run_status=row["run_status"],
        group_status=row["group_status"],
        run_caps=caps_from(row, "run_cap_"),
        run_used=CapUsage(row["run_calls"], row["run_tokens"], Decimal(row["run_cost"])),
        group_caps=caps_from(row, "group_cap_"),
        group_used=CapUsage(row["group_calls"], row["group_tokens"], Decimal(row["group_cost"])),
    )


async def settle(conn: Conn, done: CapSettle) -> None:
    """Give an attempt's reservations back (one statement for its run and group); count
    what it used if it was sent."""
    await conn.execute(
        q("settle_llm_caps"),
        done.tenant_id,
        [scope for scope, _ in done.held],
        [key for _, key in done.held],
        done.provider,
        done.model,
        done.reserved_tokens,
        done.reserved_cost,
        done.prompt_tokens,
        done.completion_tokens,
        done.sent,
    )


async def set_task_caps(conn: Conn, tasks: Sequence[NewTask], ids: Sequence[int]) -> None:
    """Store the caps of new tasks that have any (in the enqueue's transaction)."""
    capped = [(t, i) for t, i in zip(tasks, ids, strict=True) if t.llm_caps is not None]
    capped = [(t, i) for t, i in capped if t.llm_caps is not None and not t.llm_caps.empty]
    if not capped:  # the common case: one pass over the batch, no statement
        return
    caps = [t.llm_caps for t, _ in capped]
    await conn.execute(
        q("set_task_llm_caps"),
        [t.tenant_id for t, _ in capped],
        [i for _, i in capped],
        [c.calls if c else None for c in caps],
        [c.tokens if c else None for c in caps],
        [c.cost if c else None for c in caps],
    )


async def set_group_caps(conn: Conn, tenant_id: str, group_id: str, caps: LLMCaps) -> None:
    """Set (or replace) a group's own caps; a new row starts from what it already used.
    Empty caps clear those of a row that exists and make none (an uncapped group is not
    counted)."""
    if caps.empty:
        await conn.execute(q("clear_group_llm_caps"), tenant_id, group_id)
        return
    await conn.execute(
        q("set_group_llm_caps"), tenant_id, group_id, caps.calls, caps.tokens, caps.cost
    )


async def counter(conn: Conn, tenant_id: str, scope: CapScope, key: str) -> CapCounter | None:
    """A task's (scope run, key its id) or a group's row; None when nothing capped it."""
    row = await conn.fetchrow(q("get_llm_caps"), tenant_id, scope.value, key)
    if row is None:
        return None
    return CapCounter(
        scope=scope,
        caps=caps_from(row, "cap_"),
        enforced=dict(row["enforced"] or {}),
        used=CapUsage(row["calls"], row["tokens"], Decimal(row["cost"])),
        in_flight=CapUsage(
            row["reserved_calls"], row["reserved_tokens"], Decimal(row["reserved_cost"])
        ),
        updated_at=row["updated_at"],
    )
