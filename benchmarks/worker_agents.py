"""Agents for benchmarks/worker_concurrency.py (run by real worker processes)."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import App, TaskContext

app = App("worker-benchmark")


@app.agent("llm")
async def llm(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Waits like an agent waiting on a model call (``seconds``, default 1)."""
    await asyncio.sleep(float(payload.get("seconds", 1.0)))


@app.agent("noop")
async def noop(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Does nothing: measures the runtime's own cost per task."""


@app.agent("work")
async def work(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """A short task (``ms``, default 20): the fairness benchmark's unit of work."""
    await asyncio.sleep(float(payload.get("ms", 20)) / 1000)
