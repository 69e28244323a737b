"""Agents for benchmarks/waits.py (run by a real worker process)."""

from __future__ import annotations

from typing import Any

from conveyor import App, TaskContext

app = App("waits-benchmark")


@app.agent("park")
async def park(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Waits for the signal ``go`` (no timeout) and returns its payload."""
    return await ctx.wait_for("go")


@app.agent("quick")
async def quick(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Does nothing: other work for a worker whose parked tasks must not block it."""
