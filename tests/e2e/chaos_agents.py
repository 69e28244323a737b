"""An App for fault tests: each task does one transactional effect that must happen once.

The ``chaos`` agent sleeps a little (``ms``, 20-100 in the workloads of
``tests/support/chaos.py``), then inserts one row into ``chaos_effects`` through
``ctx.once_in_transaction``: the row and the ledger record commit together, so however the
worker or the database dies, the row exists exactly once. ``chaos_effects`` has no unique
constraint on purpose: a doubled effect shows up as a second row instead of an error.

A ``poison`` task fails for good before its effect: it must end dead after one attempt.
"""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import App, PermanentError, RetryPolicy, TaskContext

app = App("chaos")

SCHEMA = """
CREATE TABLE chaos_effects (
    key      text NOT NULL,
    task_id  bigint NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""
"""What a database needs, besides Conveyor's schema, before ``chaos`` tasks run."""

# Generous, so that a runtime that wrongly charges attempts shows as extra attempts in the
# accounting rather than as dead tasks (which would hide how many were charged).
RETRY = RetryPolicy(max_attempts=20, base=0.05, cap=0.5)


@app.agent("chaos", retry=RETRY)
async def chaos(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``ms``; fail for good if ``poison``; else record effect ``effect:<n>`` once."""
    await asyncio.sleep(float(payload.get("ms", 20)) / 1000)
    if payload.get("poison"):
        raise PermanentError("poison task: fails for good on purpose")
    n = int(payload["n"])
    key = f"effect:{n}"
    await ctx.once_in_transaction(key, insert_effect, key, ctx.task.id)
    return {"n": n, "attempt": ctx.task.attempt}


async def insert_effect(conn: Any, key: str, task_id: int) -> dict[str, Any]:
    """The effect: one row, written in the ledger's own transaction."""
    await conn.execute("INSERT INTO chaos_effects (key, task_id) VALUES ($1, $2)", key, task_id)
    return {"task_id": task_id}
