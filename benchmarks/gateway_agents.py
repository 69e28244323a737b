"""The agent of benchmarks/gateway.py, run by real worker processes.

It makes one ``ctx.llm.chat`` call (through the worker's gateway, built from
``CONVEYOR_LLM_CONFIG``) and returns what the benchmark adds up: the call's wall time as
the agent saw it, the attempts the gateway made, the latency of the attempt that
answered, and the gateway's own time (the wall time less the time inside attempts and the
waits for budget slots and retries, as ``ChatResult.sent`` and ``waited`` report). A call
that gets no reply is returned as such (``ok: false``), not raised, so its attempts are
counted too and the task is not retried behind the benchmark's back.
"""

from __future__ import annotations

import time
from typing import Any

from conveyor import App, TaskContext
from conveyor.errors import LLMError, LLMUnavailable

app = App("gateway-benchmark")


@app.agent("chat", max_attempts=1, timeout=900)
async def chat(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """One chat call with a short prompt; its wall time, attempts and attempt latency."""
    messages = [{"role": "user", "content": f"Write a tagline for campaign {payload['n']}."}]
    began = time.perf_counter()
    try:
        result = await ctx.llm.chat(model="mock/mock-gpt", messages=messages, max_tokens=32)
    except LLMError as exc:
        attempts = 0
        if isinstance(exc, LLMUnavailable):
            attempts = sum(failure.attempts for failure in exc.failures)
        return {
            "ok": False,
            "wall": time.perf_counter() - began,
            "attempts": attempts,
            "error": f"{type(exc).__name__}: {exc}"[:500],
        }
    return {
        "ok": True,
        "wall": time.perf_counter() - began,
        "attempts": result.attempts,
        "latency": result.latency,
        # what the gateway itself took: the wall time less its attempts and its waits
        "own": time.perf_counter() - began - result.sent - result.waited,
    }
