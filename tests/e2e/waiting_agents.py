"""Agents that wait for a person, for end-to-end tests: real worker processes run them.

Each run, step and effect appends a line to a file under the payload's ``ledger`` folder,
so a test can count how often each really ran across processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor import App, RetryPolicy, TaskContext

app = App("e2e-waits")


def _note(ledger: str, what: str, line: str) -> None:
    with (Path(ledger) / f"{what}.log").open("a") as log:
        log.write(line + "\n")


@app.agent("approve", retry=RetryPolicy(max_attempts=3, base=0.05, cap=0.2))
async def approve(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Drafts (a step), tells the reviewer (an effect), then waits for the approval."""
    ledger = payload["ledger"]
    _note(ledger, "runs", str(ctx.task.attempt))

    def draft() -> str:
        _note(ledger, "draft", "drafted")
        return f"a post about {payload['topic']}"

    def tell_reviewer(text: str) -> dict[str, str]:
        _note(ledger, "notify", text)
        return {"sent_to": "reviewer@example.com"}

    text = await ctx.step("draft", draft)
    receipt = await ctx.once(f"notify:{ctx.task.id}", tell_reviewer, text)
    decision = await ctx.wait_for("approval", timeout=3600)
    return {"text": text, "receipt": receipt, "decision": decision, "attempt": ctx.task.attempt}


@app.agent("park")
async def park(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Waits for ``go`` and returns its payload: a task that holds nothing while it waits."""
    return await ctx.wait_for("go")


@app.agent("quick")
async def quick(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Returns at once: other work, to show a worker full of waiting tasks is not busy."""
    return {"done": payload.get("n")}
