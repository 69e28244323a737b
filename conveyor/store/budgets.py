"""Drip buckets shared by every worker: reserve the next slot, give back what went unused."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.store.connection import Conn
from conveyor.store.params import BucketDraw
from conveyor.store.sql import q


def _columns(draws: Sequence[BucketDraw]) -> tuple[list[str], list[str], list[str], list[float]]:
    return (
        [d.tenant_id for d in draws],
        [d.provider for d in draws],
        [d.kind for d in draws],
        [d.seconds for d in draws],
    )


async def reserve(conn: Conn, draws: Sequence[BucketDraw]) -> list[float]:
    """Each draw's bucket clock ahead of now, in the order of ``draws``."""
    rows = await conn.fetch(q("reserve_llm_budget"), *_columns(draws))
    ahead = {(r["tenant_id"], r["provider"], r["kind"]): r["ahead"] for r in rows}
    return [ahead[(d.tenant_id, d.provider, d.kind)] for d in draws]


async def refund(conn: Conn, draws: Sequence[BucketDraw]) -> None:
    """Move each bucket's clock back by its draw's seconds."""
    if draws:
        await conn.execute(q("refund_llm_budget"), *_columns(draws))
