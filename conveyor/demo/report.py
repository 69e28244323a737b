"""What the demo prints when the work is done: per queue, fairness and caps, LLM cost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console
from rich.table import Table

from conveyor.demo.llm import PROVIDER_RPM, DemoProvider
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import Plan, QueueSummary, TenantWaits


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened in the run, beyond what task_history says at the end."""

    submitted: int
    seconds: float
    retried: int
    died: Counter[str]
    """Tasks per queue that died on a bad brief (before they were replayed)."""
    replayed: int
    redelivered: int


def print_queues(console: Console, summary: list[QueueSummary], outcome: Outcome) -> None:
    """The table per queue and the sentence under it.

    A replayed task leaves the dead-letter queue, so the final state of the tasks that died
    is ``succeeded``: the table shows them in a column of their own ("died, replayed") next
    to the tasks still dead at the end ("still dead").
    """
    table = Table(title="what happened (wait = enqueue to start)")
    columns = ("queue", "succeeded", "died, replayed", "still dead", "retries")
    for column in (*columns, "wait p50", "wait p99", "run p50"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for s in summary:
        table.add_row(
            s.queue,
            str(s.succeeded),
            str(outcome.died.get(s.queue, 0)),
            str(s.dead),
            str(s.retries),
            _ms(s.wait_p50),
            _ms(s.wait_p99),
            _ms(s.run_p50),
        )
    console.print(table)
    finished = sum(s.succeeded + s.dead + s.cancelled for s in summary)
    succeeded = sum(s.succeeded for s in summary)
    still_dead = sum(s.dead for s in summary)
    died = sum(outcome.died.values())
    console.print(
        f"{succeeded}/{finished} tasks ({outcome.submitted} submitted, "
        f"{finished - outcome.submitted} spawned by activity planners) succeeded in "
        f"{outcome.seconds:.1f}s ({finished / outcome.seconds:,.0f} tasks/s); "
        f"{outcome.retried} retried after simulated 503s; {died} died on a bad brief, and "
        f"{outcome.replayed} were replayed from the dead-letter queue after the fix "
        f"({still_dead} still dead); {outcome.redelivered} tasks of the crashed worker "
        "were redelivered by the reaper."
    )


async def print_fairness(
    console: Console,
    store: PostgresStore,
    started: datetime,
    flood: str,
    flood_cap: int,
    peaks: dict[tuple[str, str], int],
) -> None:
    """How long the flooding tenant and the others waited, and the caps that held."""
    plans = {p.id: p for p in await store.list_plans()}
    waits = await store.tenant_waits(started)
    for line in fairness_lines(flood, plans["enterprise"], flood_cap, plans["agency"], waits):
        console.print(line)
    agency_cap = plans["agency"].max_concurrent_per_role
    agency_peak = max((n for (t, _), n in peaks.items() if t != flood), default=0)
    flood_peak = max((n for (t, _), n in peaks.items() if t == flood), default=0)
    console.print(
        f"caps held across the run: at most {agency_peak} running per agency tenant and "
        f"role (plan cap {agency_cap}), {flood_peak} for {flood} (its cap {flood_cap})"
    )


def fairness_lines(
    flood: str, flood_plan: Plan, flood_cap: int, agency_plan: Plan, waits: list[TenantWaits]
) -> list[str]:
    """The fairness sentence: the waits, next to what each tenant was entitled to.

    The flooding tenant is on the enterprise plan: a larger weight and a larger cap than
    the agencies, so it is served faster on purpose. The sentence says so, rather than let
    its shorter wait read as the scheduler favouring whoever submits the most.
    """
    flooded = [w for w in waits if w.tenant_id == flood]
    others = [w for w in waits if w.tenant_id != flood]
    if not (flooded and others):
        return []
    share = flood_plan.weight / agency_plan.weight
    agency_cap = agency_plan.max_concurrent_per_role or 1
    median_other = sorted(o.wait_p50 or 0.0 for o in others)[len(others) // 2]
    return [
        f"fair dequeue: {flood} submitted a third of the batch at once ({flooded[0].tasks} "
        f"tasks with what its planners spawned). It is an enterprise tenant, with "
        f"{_times(share)} an agency's share (plan weight {flood_plan.weight:g} vs "
        f"{agency_plan.weight:g}) and {_times(flood_cap / agency_cap)} its cap ({flood_cap} "
        f"running per role vs {agency_cap}), so it is meant to be served faster: it waited "
        f"p50 {_ms(flooded[0].wait_p50)}. The other {len(others)} tenants "
        f"(~{sum(o.tasks for o in others) // len(others)} tasks each) waited p50 "
        f"{_ms(median_other)}, worst p99 {_ms(max(o.wait_p99 or 0.0 for o in others))}."
    ]


def _times(ratio: float) -> str:
    return "twice" if ratio == 2 else f"{ratio:g} times"


async def print_llm_usage(
    store: PostgresStore,
    tenants: list[str],
    started: datetime,
    provider: DemoProvider,
    console: Console,
) -> None:
    """What the model calls cost, per tenant, from ``llm_calls``."""
    table = Table(title="LLM calls (from llm_calls)")
    for column in ("tenant", "attempts", "failed", "tokens in", "tokens out", "cost (USD)"):
        table.add_column(column, justify="left" if column == "tenant" else "right")
    totals = [0, 0]
    for tenant in tenants:
        rows = await store.llm_usage(tenant, started)
        attempts, failed = sum(r.attempts for r in rows), sum(r.failed for r in rows)
        totals[0] += attempts
        totals[1] += failed
        table.add_row(
            tenant,
            f"{attempts:,}",
            f"{failed:,}",
            f"{sum(r.prompt_tokens for r in rows):,}",
            f"{sum(r.completion_tokens for r in rows):,}",
            f"{sum(r.cost for r in rows):.4f}",
        )
    console.print(table)
    refused = provider.limit_429s()
    if refused is not None:
        console.print(
            f"the gateway made {totals[0]:,} attempts: {totals[1]:,} drew an injected 429 or "
            f"503 and were retried; the provider refused {refused} for exceeding its "
            f"{PROVIDER_RPM:,} requests/min (the shared budget kept every worker under it)."
        )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"
