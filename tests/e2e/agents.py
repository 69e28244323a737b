"""An App for end-to-end tests: real worker processes run these handlers."""

from __future__ import annotations

import asyncio
import os
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


@app.agent("traced", timeout=60, retry=RetryPolicy(max_attempts=2, base=0.05, cap=0.1))
async def traced(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """A step that calls the model; fails after it in the first attempt if asked."""

    async def draft() -> str:
        reply = await ctx.llm.chat(model="writer", messages=[{"role": "user", "content": "hi"}])
        return reply.text

    text = await ctx.step("draft", draft)
    if payload.get("fail_once") and ctx.task.attempt == 1:
        raise RuntimeError("the first attempt fails after its step")
    return {"text": text}


@app.agent("careless", retry=RetryPolicy(max_attempts=1))
async def careless(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Logs the secrets it can find, then fails naming one: the logs must mask them all."""
    key = os.environ.get("MOCK_API_KEY", "")
    dsn = os.environ["DATABASE_URL"]
    ctx.log.warning("careless", dsn=dsn, header=f"Bearer {key}", api_key=key, note=f"key {key}")
    raise RuntimeError(f"gave up on {dsn}")


@app.agent("reporter", retry=RetryPolicy(max_attempts=1))
async def reporter(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Reports its progress twice (``ctx.emit``), sleeping ``sleep`` seconds in between."""
    for step in range(2):
        await ctx.emit("progress", {"step": step})
        await asyncio.sleep(float(payload.get("sleep", 0)))
    return {"steps": 2}
