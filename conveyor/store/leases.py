"""Leases: claim a batch, heartbeat, release, reap expired ones, promote scheduled tasks."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.store.connection import Conn
from conveyor.store.params import ClaimRequest, LeaseRef
from conveyor.store.records import ClaimedTask, HeartbeatResult, ReapResult
from conveyor.store.sql import q

REAPER_LOCK = 0x636F6E7665790001  # "convey" + 1: the advisory lock of the reaper


async def claim(conn: Conn, request: ClaimRequest) -> list[ClaimedTask]:
    """Lease up to ``request.limit`` ready tasks under one new fencing token."""
    if request.limit <= 0 or not request.queues:
        return []
    rows = await conn.fetch(
        q("claim_batch"),
        list(request.queues),
        request.limit,
        request.worker_id,
        request.lease_seconds,
        request.attempts_defaults(),
    )
    # claim_batch RETURNs the columns in ClaimedTask's field order; positional construction
    # costs 2 us a task against 5 us for keywords (measured).
    claimed = [ClaimedTask(*row) for row in rows]
    if len(request.queues) > 1:
        claimed.sort(key=_priority)  # stable: each queue's chunk is in claim order
    return claimed


def _priority(task: ClaimedTask) -> int:
    return task.priority


async def heartbeat(
    conn: Conn,
    worker_id: str,
    leases: Sequence[LeaseRef],
    lease_seconds: float,
    *,
    unwritten: int = 0,
    seconds_since_outcome: float = 0.0,
) -> HeartbeatResult:
    """Extend every lease in ``leases`` and report the worker's health, in one statement."""
    rows = await conn.fetch(
        q("extend_leases"),
        worker_id,
        lease_seconds,
        [lease.task_id for lease in leases],
        [lease.lease_token for lease in leases],
        unwritten,
        seconds_since_outcome,
    )
    extended = frozenset(row["id"] for row in rows)
    return HeartbeatResult(
        extended=extended,
        lost=frozenset(lease.task_id for lease in leases) - extended,
        cancel_requested=frozenset(row["id"] for row in rows if row["cancel_requested"]),
    )


async def release(conn: Conn, leases: Sequence[LeaseRef]) -> list[int]:
    """Hand leased tasks back to the queue without counting the attempt."""
    if not leases:
        return []
    async with conn.transaction():
        rows = await conn.fetch(
            q("release_leases"),
            [lease.task_id for lease in leases],
            [lease.lease_token for lease in leases],
        )
        await _notify(conn, [row["queue"] for row in rows])
    return [row["id"] for row in rows]


async def reap_expired(conn: Conn, limit: int) -> ReapResult | None:
    """Return expired leases to the queue; None when another reaper holds the lock."""
    async with conn.transaction():
        if not await conn.fetchval(q("try_leader_lock"), REAPER_LOCK):
            return None
        rows = await conn.fetch(q("reap_expired_leases"), limit)
        requeued = tuple(row["id"] for row in rows if row["outcome"] == "queued")
        await _notify(conn, [row["queue"] for row in rows if row["outcome"] == "queued"])
    return ReapResult(
        requeued=requeued,
        dead=tuple(row["id"] for row in rows if row["outcome"] == "dead"),
        cancelled=tuple(row["id"] for row in rows if row["outcome"] == "cancelled"),
    )


async def promote_due(conn: Conn, limit: int, *, fair: bool = True) -> int:
    """Make scheduled tasks whose time has come ready (keyed fairly); returns how many."""
    async with conn.transaction():
        rows = await conn.fetch(q("promote_due"), limit, fair)
        await _notify(conn, [row["queue"] for row in rows])
    return len(rows)


async def _notify(conn: Conn, queues: list[str]) -> None:
    if queues:
        await conn.execute(q("notify_queues"), queues)
