"""The LLM gateway's shared response cache: replies stored per (tenant, request key).

The gateway computes the key (``conveyor/gateway/accounting/response_cache.py``) and the
reply's JSON; this module only stores, serves and expires them. A read counts its hit in the
same statement.
"""

from __future__ import annotations

from typing import Any

from conveyor.store.connection import Conn
from conveyor.store.sql import q

PRUNE_BATCH = 10_000
"""Expired rows deleted per statement by :func:`prune`."""


async def get(conn: Conn, tenant_id: str, key: bytes) -> dict[str, Any] | None:
    """The unexpired reply stored under (``tenant_id``, ``key``), or None; counts a hit."""
    reply: dict[str, Any] | None = await conn.fetchval(q("llm_cache_get"), tenant_id, key)
    return reply


async def put(
    conn: Conn, tenant_id: str, key: bytes, reply: dict[str, Any], ttl_seconds: float
) -> None:
    """Store ``reply`` for ``ttl_seconds``, replacing an existing or expired row.

    ``ttl_seconds <= 0`` stores a row that is already expired (a miss until it is replaced).
    """
    await conn.execute(q("llm_cache_put"), tenant_id, key, reply, float(ttl_seconds))


async def prune(conn: Conn, batch: int = PRUNE_BATCH) -> int:
    """Delete every expired row, ``batch`` per statement; how many were deleted."""
    removed = 0
    while True:
        status = await conn.execute(q("prune_llm_cache"), batch)
        count = int(status.split()[-1])
        removed += count
        if count < batch:
            return removed
