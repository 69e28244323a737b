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
    return {"echo": payload, "attempt": ctx.task.attempt}
