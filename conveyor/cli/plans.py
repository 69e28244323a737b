"""``conveyor plans``: what each tier may run, how much, and how fast."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

import typer
from rich.table import Table

from conveyor.cli.common import INT32_MAX, INT64_MAX, SPEND_MAX, DatabaseUrl, caps_text, out
from conveyor.cli.common import rate_text as _rate_text
from conveyor.cli.common import run as _run
from conveyor.cli.common import settings as _settings
from conveyor.cli.common import start_rate as _start_rate
from conveyor.cli.common import with_store as _with_store
from conveyor.core.llm_caps import LLMCaps
from conveyor.errors import ConveyorError
from conveyor.store.params import PlanUpdate
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import Plan

plans_cli = typer.Typer(help="Plans: what each tier may run.", no_args_is_help=True)


@plans_cli.command("set")
def plans_set(
    plan_id: str,
    max_concurrent: Annotated[
        int | None,
        typer.Option("--max-concurrent", min=1, max=INT32_MAX, help="Cap per tenant and role."),
    ] = None,
    monthly_limit: Annotated[
        int | None, typer.Option("--monthly-limit", min=0, max=INT64_MAX)
    ] = None,
    weight: Annotated[
        float | None, typer.Option("--weight", min=0.001, help="Fair share against others.")
    ] = None,
    start_rate: Annotated[
        str | None,
        typer.Option("--start-rate", help="At most COUNT starts per DURATION, e.g. 10/1m."),
    ] = None,
    roles: Annotated[
        str | None, typer.Option("--roles", help="Comma-separated roles the plan allows.")
    ] = None,
    token_budget: Annotated[
        int | None,
        typer.Option(
            "--token-budget", min=0, max=INT64_MAX, help="LLM tokens per tenant and month."
        ),
    ] = None,
    spend_limit: Annotated[
        float | None,
        typer.Option(
            "--spend-limit", min=0, max=SPEND_MAX, help="LLM spend per tenant and month, in USD."
        ),
    ] = None,
    llm_rpm: Annotated[
        int | None,
        typer.Option(
            "--llm-rpm",
            min=1,
            max=INT32_MAX,
            help="LLM requests per minute per tenant and provider.",
        ),
    ] = None,
    llm_tpm: Annotated[
        int | None,
        typer.Option(
            "--llm-tpm", min=1, max=INT64_MAX, help="LLM tokens per minute per tenant and provider."
        ),
    ] = None,
    run_calls: Annotated[
        int | None,
        typer.Option("--run-calls", min=0, max=INT64_MAX, help="LLM calls per task run (cap)."),
    ] = None,
    run_tokens: Annotated[
        int | None,
        typer.Option("--run-tokens", min=0, max=INT64_MAX, help="LLM tokens per task run (cap)."),
    ] = None,
    run_cost: Annotated[
        float | None,
        typer.Option("--run-cost", min=0, max=SPEND_MAX, help="LLM USD per task run (cap)."),
    ] = None,
    group_calls: Annotated[
        int | None,
        typer.Option("--group-calls", min=0, max=INT64_MAX, help="LLM calls per group (cap)."),
    ] = None,
    group_tokens: Annotated[
        int | None,
        typer.Option("--group-tokens", min=0, max=INT64_MAX, help="LLM tokens per group (cap)."),
    ] = None,
    group_cost: Annotated[
        float | None,
        typer.Option("--group-cost", min=0, max=SPEND_MAX, help="LLM USD per group (cap)."),
    ] = None,
    no_run_caps: Annotated[
        bool, typer.Option("--no-run-caps", help="Remove the caps per task run first.")
    ] = False,
    no_group_caps: Annotated[
        bool, typer.Option("--no-group-caps", help="Remove the caps per group first.")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Change a plan (flags not given keep their value); tenants on it follow at once
    (LLM limits and caps within 30 s: workers cache them)."""
    run_given = CapFlags(run_calls, run_tokens, run_cost, no_run_caps)
    group_given = CapFlags(group_calls, group_tokens, group_cost, no_group_caps)
    try:
        update = PlanUpdate(
            plan_id,
            max_concurrent,
            monthly_limit,
            weight,
            _start_rate(start_rate),
            tuple(r.strip() for r in roles.split(",") if r.strip()) if roles is not None else None,
            monthly_token_budget=token_budget,
            llm_requests_per_minute=llm_rpm,
            llm_tokens_per_minute=llm_tpm,
            monthly_spend_limit=None if spend_limit is None else Decimal(str(spend_limit)),
        )
    except ConveyorError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def go(store: PostgresStore) -> Plan:
        current = next((p for p in await store.list_plans() if p.id == plan_id), None)
        if current is None or not (run_given.any or group_given.any):
            return await store.update_plan(update)  # an unknown plan is refused there
        try:
            caps = dataclasses.replace(
                update,
                run_caps=run_given.applied_to(current.run_caps),
                group_caps=group_given.applied_to(current.group_caps),
            )
        except ConveyorError as exc:
            raise typer.BadParameter(str(exc)) from None
        return await store.update_plan(caps)

    plan = _run(_with_store(_settings(database_url), go))
    out.print(
        f"{plan.id}: roles {', '.join(plan.allowed_roles) if plan.allowed_roles else 'any'}; "
        f"max concurrent/role {plan.max_concurrent_per_role or 'unlimited'}; "
        f"start rate {_rate_text(plan.start_rate_limit, plan.start_rate_interval, 'unlimited')}; "
        f"weight {plan.weight:g}; LLM {_llm_text(plan)}; caps {_caps_text(plan)}"
    )


@dataclass(frozen=True, slots=True)
class CapFlags:
    """The cap flags of one scope: values given, and whether to clear the old ones first."""

    calls: int | None
    tokens: int | None
    cost: float | None
    clear: bool

    @property
    def any(self) -> bool:
        """Whether a flag of this scope was given."""
        return self.clear or any(v is not None for v in (self.calls, self.tokens, self.cost))

    def applied_to(self, current: LLMCaps) -> LLMCaps | None:
        """The scope's new caps (None: unchanged), the flags given over ``current``."""
        if not self.any:
            return None
        base = LLMCaps() if self.clear else current
        return LLMCaps(
            calls=self.calls if self.calls is not None else base.calls,
            tokens=self.tokens if self.tokens is not None else base.tokens,
            cost=Decimal(str(self.cost)) if self.cost is not None else base.cost,
        )


def _caps_text(plan: Plan) -> str:
    return f"per run {caps_text(plan.run_caps)}, per group {caps_text(plan.group_caps)}"


def _llm_text(plan: Plan) -> str:
    rpm, tpm = plan.llm_requests_per_minute, plan.llm_tokens_per_minute
    tokens, spend = plan.monthly_token_budget, plan.monthly_spend_limit
    return (
        f"{f'{rpm:,} req/min' if rpm else 'unlimited req/min'}, "
        f"{f'{tpm:,} tokens/min' if tpm else 'unlimited tokens/min'}, "
        f"{f'{tokens:,} tokens/month' if tokens is not None else 'unlimited tokens/month'}, "
        f"{f'${spend:,.2f}/month' if spend is not None else 'unlimited spend'}"
    )


@plans_cli.command("list")
def plans_list(database_url: DatabaseUrl = None) -> None:
    """The plans: allowed roles, caps and monthly limits."""
    plans = _run(_with_store(_settings(database_url), lambda s: s.list_plans()))
    table = Table(title="plans")
    columns = ("id", "roles", "max concurrent/role", "start rate/role", "weight")
    for column in (*columns, "tasks/month", "LLM limits", "LLM caps"):
        table.add_column(column)
    for p in plans:
        table.add_row(
            p.id,
            ", ".join(p.allowed_roles) if p.allowed_roles is not None else "any",
            str(p.max_concurrent_per_role or "configurable"),
            _rate_text(p.start_rate_limit, p.start_rate_interval, "unlimited"),
            f"{p.weight:g}",
            f"{p.monthly_task_limit:,}" if p.monthly_task_limit is not None else "unlimited",
            _llm_text(p),
            _caps_text(p),
        )
    out.print(table)
