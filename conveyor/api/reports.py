"""The API's reports: LLM usage summed for a task, a group or a month, a tenant's month, and
a task's or group's caps (the runaway guard) with what they counted.

Each reads through a tenant-bound view (``store.for_tenant``), so a tenant route and the
admin route for a named tenant answer from the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from conveyor.api.problems import Problem
from conveyor.client.cap_models import CapInForce, CapsView
from conveyor.client.models import (
    LLMUsageLine,
    LLMUsageSummary,
    QueueUsage,
    UsageReport,
)
from conveyor.core.partitions import Month
from conveyor.store.records import CapCounter, LLMUsage
from conveyor.store.tenant import TenantStore

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CLOCK_SKEW = timedelta(days=1)
"""How far a worker's clock (which stamps LLM calls) may run behind the database's (which
stamps tasks): a task's calls are looked up from this long before the task was created."""


def usage_summary(rows: Sequence[LLMUsage]) -> LLMUsageSummary:
    """Totals over ``rows``, with each (provider, model) line."""
    lines = [
        LLMUsageLine(
            provider=r.provider,
            model=r.model,
            calls=r.attempts,
            succeeded=r.succeeded,
            failed=r.failed,
            cached=r.cached,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            cost=r.cost,
            unpriced=bool(r.unpriced),
        )
        for r in rows
    ]
    return LLMUsageSummary(
        calls=sum(line.calls for line in lines),
        prompt_tokens=sum(line.prompt_tokens for line in lines),
        completion_tokens=sum(line.completion_tokens for line in lines),
        cost=sum((line.cost for line in lines), start=Decimal(0)),
        unpriced=any(line.unpriced for line in lines),
        by_model=lines,
    )


async def task_usage(view: TenantStore, task_id: int, created_at: datetime) -> LLMUsageSummary:
    """The LLM usage of one task so far."""
    rows = await view.llm_usage(created_at - CLOCK_SKEW, task_id=task_id)
    return usage_summary(rows)


async def group_usage(view: TenantStore, group_id: str) -> LLMUsageSummary:
    """The LLM usage of a group's tasks so far."""
    return usage_summary(await view.llm_usage(EPOCH, group_id=group_id))


def caps_view(counter: CapCounter | None) -> CapsView | None:
    """A task's or group's caps in force and their counters; None when nothing caps it."""
    if counter is None:
        return None
    force = counter.in_force
    lines = {
        cap.dimension.value: CapInForce(limit=Decimal(cap.limit), source=cap.source.value)
        for cap in force.caps()
    }
    return CapsView(
        **lines,
        used_calls=counter.used.calls,
        used_tokens=counter.used.tokens,
        used_cost=counter.used.cost,
        in_flight_calls=counter.in_flight.calls,
        in_flight_tokens=counter.in_flight.tokens,
        in_flight_cost=counter.in_flight.cost,
    )


def parse_month(text: str | None) -> Month:
    """``YYYY-MM`` (UTC) as a Month; this month when None."""
    if text is None:
        return Month.of(datetime.now(UTC))
    year, _, month = text.partition("-")
    try:
        return Month(int(year), int(month))
    except ValueError:
        raise Problem(422, "validation", f"month: write a month as YYYY-MM, got {text!r}") from None


async def month_report(view: TenantStore, month: Month) -> UsageReport:
    """The tenant's tasks created in ``month`` by queue and state, and its LLM usage."""
    counts = await view.task_counts(month.start, month.end)
    llm = await view.llm_usage(month.start, until=month.end)
    tasks = [
        QueueUsage(queue=queue, counts=by_state, total=sum(by_state.values()))
        for queue, by_state in sorted(counts.items())
    ]
    return UsageReport(
        tenant_id=view.tenant_id,
        month=f"{month.year:04d}-{month.month:02d}",
        tasks=tasks,
        tasks_total=sum(t.total for t in tasks),
        llm=usage_summary(llm),
    )
