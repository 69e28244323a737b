"""Live LLM output (``task_chunks``): a token relay appends it, API viewers read it after
their cursor, maintenance prunes it once its task has ended (migrations/0018)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from conveyor.store.connection import Conn
from conveyor.store.event_records import LiveChunk
from conveyor.store.sql import q

PRUNE_BATCH = 10_000


async def append(conn: Conn, chunks: Sequence[LiveChunk]) -> None:
    """Write a relay's batch in one statement (repeats are ignored)."""
    if chunks:
        rows = [
            {
                "task_id": c.task_id,
                "run": c.run,
                "seq": c.seq,
                "tenant_id": c.tenant_id,
                "kind": c.kind,
                "text": c.text,
            }
            for c in chunks
        ]
        await conn.execute(q("append_chunks"), rows)


async def after(
    conn: Conn, watched: Sequence[tuple[str, int, tuple[int, int]]], limit: int
) -> list[LiveChunk]:
    """For each ``(tenant_id, task_id, cursor)`` the chunks after the cursor, in order."""
    if not watched:
        return []
    rows = await conn.fetch(
        q("chunks_after"),
        [task_id for _, task_id, _ in watched],
        [cursor[0] for _, _, cursor in watched],
        [cursor[1] for _, _, cursor in watched],
        limit,
        [tenant for tenant, _, _ in watched],
    )
    return [_chunk(row) for row in rows]


async def ended(conn: Conn, task_ids: Sequence[int]) -> set[int]:
    """Which of ``task_ids`` are no longer active (finished, or never existed)."""
    if not task_ids:
        return set()
    return {row["id"] for row in await conn.fetch(q("tasks_ended"), list(task_ids))}


async def prune(conn: Conn, cutoff: datetime) -> int:
    """Delete the chunks of ended tasks written before ``cutoff``; how many."""
    removed = 0
    while True:
        status = await conn.execute(q("prune_chunks"), cutoff, PRUNE_BATCH)
        count = int(status.split()[-1])
        removed += count
        if count < PRUNE_BATCH:
            return removed


def _chunk(row: Any) -> LiveChunk:
    return LiveChunk(row["task_id"], row["run"], row["seq"], row["kind"], row["text"])
