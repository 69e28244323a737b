"""Handlers for the isolation tests: module-level, so a child process can import them."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from conveyor import PermanentError, TaskContext

MEGABYTE = 1024 * 1024


async def describe(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Return where it ran and what it saw."""
    print("stdout of a handler must not disturb the reply")
    ctx.log.info("isolated_run", n=payload["n"])
    return {"pid": os.getpid(), "task_id": ctx.task.id, "doubled": payload["n"] * 2}


def hog_memory(ctx: TaskContext, payload: dict[str, Any]) -> int:
    """Allocate about 1 GB in 16 MB pieces (a leak, not one impossible request)."""
    chunks = [bytearray(16 * MEGABYTE) for _ in range(64)]
    return len(chunks)


def burn_cpu(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Spin forever."""
    while True:
        pass


def flaky(ctx: TaskContext, payload: dict[str, Any]) -> str:
    """Fail with ValueError until attempt ``payload["succeed_on"]``."""
    if ctx.task.attempt < payload["succeed_on"]:
        raise ValueError(f"broken on attempt {ctx.task.attempt}")
    return f"fixed on attempt {ctx.task.attempt}"


async def refuse(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Fail for good."""
    raise PermanentError("bad input")


async def sleep_forever(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Record this process's pid in ``payload["pid_file"]``, then sleep."""
    Path(payload["pid_file"]).write_text(str(os.getpid()))
    await asyncio.sleep(3600)


class Brief(BaseModel):
    """A typed payload."""

    topic: str
    words: int


class Draft(BaseModel):
    """A typed result."""

    text: str
    pid: int


def write_typed(ctx: TaskContext, payload: Brief) -> Draft:
    """Receives its payload as a Brief and returns a Draft, in a child process."""
    assert isinstance(payload, Brief)
    return Draft(text=f"{payload.words} words on {payload.topic}", pid=os.getpid())


async def ask_model(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """One ``ctx.llm.chat`` from inside the child, through the gateway it built."""
    reply = await ctx.llm.chat(model="writer", messages=[{"role": "user", "content": "hi"}])
    return {"pid": os.getpid(), "text": reply.text}
