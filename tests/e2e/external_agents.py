"""Roles served by an external runtime, for end-to-end tests: a worker process delivers
them to the small aiohttp runtime the test starts (its URL in ``E2E_RUNTIME_URL``)."""

from __future__ import annotations

import os
from typing import Any

from conveyor import App, RetryPolicy, TaskContext

RUNTIME = os.environ.get("E2E_RUNTIME_URL", "http://127.0.0.1:9")
QUICK = RetryPolicy(max_attempts=2, base=0.05, cap=0.1)

app = App("e2e-external")
app.external_agent("remote", url=f"{RUNTIME}/run", timeout=120, retry=QUICK)
app.external_agent("remote-slow", url=f"{RUNTIME}/run", timeout=1.5, retry=QUICK)
app.external_agent("remote-offlist", url="https://runtime.example.com/run", retry=QUICK)


@app.agent("local")
async def local(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """A Python role; a tenant's adapter_override may send its tasks to the runtime."""
    return {"ran": "python", "n": payload.get("n")}
