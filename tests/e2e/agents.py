"""An App for end-to-end tests: real worker processes run these handlers."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import App, PermanentError, RetryPolicy, TaskContext

app = App("e2e")


@app.agent("echo", retry=RetryPolicy(max_attempts=3, base=0.05, cap=0.2))
async def echo(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``sleep`` seconds, fails as asked, else returns the payload."""
    await asyncio.sleep(float(payload.get("sleep", 0)))
    if payload.get("fail") == "permanent":
        raise PermanentError("asked to fail")
    if "effect" in payload:  # a side effect that must happen once, whatever crashes
        await ctx.once(f"effect:{payload['effect']}", lambda: {"by_task": ctx.task.id})
    return {"echo": payload, "attempt": ctx.task.attempt}


@app.agent("hog", isolation="process", memory_limit_mb=128, cpu_limit_seconds=10)
def hog(ctx: TaskContext, payload: dict[str, Any]) -> int:
    """Leaks about 1 GB in 16 MB pieces: only its child process may die of it."""
    chunks = [bytearray(16 * 1024 * 1024) for _ in range(64)]
    return len(chunks)


@app.agent("chat", timeout=60, retry=RetryPolicy(max_attempts=1))
async def chat(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """One call through the worker's gateway (``CONVEYOR_LLM_CONFIG``)."""
    reply = await ctx.llm.chat(model="writer", messages=[{"role": "user", "content": "hi"}])
    return {"tokens": reply.total_tokens, "attempts": reply.attempts}


@app.agent("storyteller", timeout=60, retry=RetryPolicy(max_attempts=1))
async def storyteller(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Streams one reply through the worker's gateway, reporting progress as it goes."""
    await ctx.emit("progress", {"stage": "writing"})
    parts = []
    async with ctx.llm.stream(
        model="writer", messages=[{"role": "user", "content": payload.get("prompt", "hi")}]
    ) as stream:
        async for chunk in stream:
            parts.append(chunk.text)
    await ctx.emit("progress", {"stage": "done"})
    return {"text": "".join(parts)}


@app.agent("reporter", retry=RetryPolicy(max_attempts=1))
async def reporter(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Reports its progress twice (``ctx.emit``), sleeping ``sleep`` seconds in between."""
    for step in range(2):
        await ctx.emit("progress", {"step": step})
        await asyncio.sleep(float(payload.get("sleep", 0)))
    return {"steps": 2}
