"""The seven roles of the marketing-agency workload, with simulated work.

Task times follow the time-compressed agency mix of WORKLOADS.md (a few tens of
milliseconds instead of minutes). Each agent makes two model calls through the gateway
(``ctx.llm``, against the mock provider unless a key is set), each a durable step
(``ctx.step``), with some tool work around them; the activity planner spawns a copywriter,
an SEO and a social task for its campaign (``ctx.spawn``). Failure modes are
driven by the payload so the demo is repeatable: ``flaky`` fails between its two calls on
the first attempt (a provider 503; the retry replays the first call from the ledger),
``bad_brief`` fails for good until the brief is fixed, after which a replay from the
dead-letter queue succeeds.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from conveyor.app import App
from conveyor.core.backoff import RetryPolicy
from conveyor.errors import PermanentError
from conveyor.worker.context import TaskContext

ROLES: dict[str, float] = {
    # role -> mean simulated seconds per task (real task time / ~3000)
    "activity_planner": 0.12,
    "copywriter": 0.04,
    "seo": 0.06,
    "social": 0.04,
    "paid_ads": 0.08,
    "analyst": 0.06,
    "researcher": 0.12,
}

app = App("agency-demo")
briefs_fixed = False
"""Flipped by the demo to show a dead task succeeding after a replay."""


class ProviderUnavailable(Exception):
    """A simulated 503 from the model provider: retried with backoff."""


calls = Counter[str]()
"""``requested`` model calls (ctx.step invocations) and ``executed`` ones; the difference
is the work durable steps saved on retries."""

PROMPTS = {1: "Outline a {role} deliverable for: {brief}", 2: "Write the {role} piece for: {brief}"}


async def model_call(
    ctx: TaskContext, part: int, brief: str, mean_seconds: float
) -> dict[str, Any]:
    """One model call through the gateway, and the tool work around it."""
    calls["executed"] += 1
    await asyncio.sleep(random.uniform(0.5, 1.5) * mean_seconds)  # tools, parsing
    role = ctx.task.queue
    reply = await ctx.llm.chat(
        model="writer",
        messages=[
            {"role": "system", "content": f"You are the agency's {role.replace('_', ' ')}."},
            {"role": "user", "content": PROMPTS[part].format(role=role, brief=brief)},
        ],
        max_tokens=80,
        temperature=0.7,
    )
    return {"part": part, "words": len(reply.text.split()), "tokens": reply.total_tokens}


async def simulate(
    ctx: TaskContext, payload: dict[str, Any], mean_seconds: float
) -> dict[str, Any]:
    """Two model calls as durable steps; fail as the payload asks, between them."""
    if payload.get("bad_brief") and not briefs_fixed:
        raise PermanentError("the brief has no target audience; fix it and replay")
    brief = str(payload.get("brief", ""))
    calls["requested"] += 1
    outline = await ctx.step("outline", model_call, ctx, 1, brief, mean_seconds / 4)
    if payload.get("flaky") and ctx.task.attempt == 1:
        raise ProviderUnavailable("model provider answered 503")  # the outline is kept
    calls["requested"] += 1
    body = await ctx.step("body", model_call, ctx, 2, brief, mean_seconds / 4)
    spawned = []
    if ctx.task.queue == "activity_planner":  # a campaign decomposes into role tasks
        for role in ("copywriter", "seo", "social"):
            spawned.append(await ctx.spawn(role, {"brief": payload.get("brief")}, priority=1))
    return {
        "role": ctx.task.queue,
        "tenant": ctx.task.tenant_id,
        "words": outline["words"] + body["words"],
        "tokens": outline["tokens"] + body["tokens"],
        "spawned": spawned,
    }


def _register(role: str, mean_seconds: float) -> None:
    async def handler(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        return await simulate(ctx, payload, mean_seconds)

    handler.__name__ = f"{role}_agent"
    app.agent(role, timeout=30, retry=RetryPolicy(max_attempts=3, base=0.05, cap=0.5))(handler)


for _role, _mean in ROLES.items():
    _register(_role, _mean)
