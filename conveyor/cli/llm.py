"""``conveyor llm``: what tenants spent on models, the price table, tenants' LLM limits."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from conveyor.cli.common import INT64_MAX, SPEND_MAX, DatabaseUrl, out, task_id
from conveyor.cli.common import run as _run
from conveyor.cli.common import settings as _settings
from conveyor.cli.common import with_store as _with_store
from conveyor.core.partitions import Month
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import TenantLLMPolicy

N = TypeVar("N", int, Decimal)

llm_cli = typer.Typer(help="LLM usage, prices and tenants' LLM limits.", no_args_is_help=True)

_MONTH = re.compile(r"(\d{4})-(\d{2})")


def _plain(value: Decimal) -> str:
    """A price without trailing zeros: 2.000000 -> 2, 0.150000 -> 0.15."""
    return f"{value.normalize():f}"


def _month_start(text: str | None) -> datetime:
    if text is None:
        return Month.of(datetime.now(UTC)).start
    match = _MONTH.fullmatch(text)
    if match is None or not 1 <= int(match[2]) <= 12:
        raise typer.BadParameter(f"write a month as YYYY-MM, got {text!r}", param_hint="--month")
    return Month(int(match[1]), int(match[2])).start


@llm_cli.command("usage")
def llm_usage(
    tenant_id: str,
    group: Annotated[str | None, typer.Option("--group", help="Only this campaign.")] = None,
    task: Annotated[
        int | None, typer.Option("--task", parser=task_id, help="Only this task id.")
    ] = None,
    month: Annotated[
        str | None, typer.Option("--month", help="From this month on (YYYY-MM); default: this.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """A tenant's LLM calls, tokens and cost per provider and model."""
    since = _month_start(month)
    rows = _run(
        _with_store(
            _settings(database_url),
            lambda s: s.llm_usage(tenant_id, since, group_id=group, task_id=task),
        )
    )
    scope = f" group {group}" if group else ""
    scope += f" task {task}" if task is not None else ""
    table = Table(title=f"LLM usage of {tenant_id}{scope} since {since:%Y-%m-%d}")
    for column in ("provider", "model", "attempts", "ok", "failed", "cached", "tokens in"):
        table.add_column(column)
    table.add_column("tokens out")
    table.add_column("cost (USD)", justify="right")
    total = Decimal(0)
    for r in rows:
        total += r.cost
        table.add_row(
            r.provider,
            r.model,
            f"{r.attempts:,}",
            f"{r.succeeded:,}",
            f"{r.failed:,}",
            f"{r.cached:,}",
            f"{r.prompt_tokens:,}",
            f"{r.completion_tokens:,}",
            f"{r.cost:.6f}" + (" (no price)" if r.unpriced else ""),
        )
    out.print(table)
    out.print(f"total cost: ${total:.6f}")


@llm_cli.command("prices")
def llm_prices(database_url: DatabaseUrl = None) -> None:
    """The price table: USD per million tokens in and out."""
    prices = _run(_with_store(_settings(database_url), lambda s: s.list_llm_prices()))
    table = Table(title="LLM prices (USD per million tokens)")
    for column in ("model", "provider", "input", "output", "updated"):
        table.add_column(column)
    for p in prices:
        table.add_row(
            p.model,
            p.provider or "any",
            _plain(p.input_per_mtok),
            _plain(p.output_per_mtok),
            f"{p.updated_at:%Y-%m-%d}",
        )
    out.print(table)


@llm_cli.command("price")
def llm_price(
    model: str,
    input_price: Annotated[
        float, typer.Option("--input", min=0, help="USD per million prompt tokens.")
    ],
    output_price: Annotated[
        float, typer.Option("--output", min=0, help="USD per million completion tokens.")
    ],
    provider: Annotated[
        str, typer.Option("--provider", help="Only on this provider (the config's name).")
    ] = "",
    database_url: DatabaseUrl = None,
) -> None:
    """Set a model's price; calls recorded from now on are costed with it."""
    price = _run(
        _with_store(
            _settings(database_url),
            lambda s: s.set_llm_price(
                model, provider, Decimal(str(input_price)), Decimal(str(output_price))
            ),
        )
    )
    out.print(
        f"{price.model} on {price.provider or 'any provider'}: ${_plain(price.input_per_mtok)} "
        f"in, ${_plain(price.output_per_mtok)} out per million tokens"
    )


def _limit(text: str | None, flag: str, kind: Callable[[str], N]) -> tuple[N | None, bool]:
    """(value, clear) of a limit flag: a number, or 'plan' to fall back to the plan's."""
    if text is None:
        return None, False
    if text == "plan":
        return None, True
    try:
        value = kind(text)
    except (ValueError, InvalidOperation):
        raise typer.BadParameter(
            f"give a number >= 0, or 'plan' to use the plan's, got {text!r}", param_hint=flag
        ) from None
    if value < 0:
        raise typer.BadParameter(f"must be >= 0, got {text!r}", param_hint=flag)
    if value > (INT64_MAX if kind is int else SPEND_MAX):
        raise typer.BadParameter(f"{text} is larger than the database can hold", param_hint=flag)
    return value, False


@llm_cli.command("limits")
def llm_limits(
    tenant_id: str,
    tokens: Annotated[
        str | None,
        typer.Option("--tokens", help="Monthly token budget, or 'plan' for the plan's."),
    ] = None,
    spend: Annotated[
        str | None,
        typer.Option("--spend", help="Monthly spend limit in USD, or 'plan' for the plan's."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Set a tenant's own monthly LLM token budget or spend limit (over its plan's)."""
    token_value, clear_tokens = _limit(tokens, "--tokens", int)
    spend_value, clear_spend = _limit(spend, "--spend", Decimal)

    async def apply(store: PostgresStore) -> tuple[TenantLLMPolicy, dict[str, Any] | None]:
        if tokens is not None or spend is not None:
            await store.set_tenant_llm_limits(
                tenant_id,
                monthly_token_budget=token_value,
                monthly_spend_limit=spend_value,
                clear_tokens=clear_tokens,
                clear_spend=clear_spend,
            )
        policy = await store.tenant_llm_policy(tenant_id, "")
        month = await store.tenant_llm_month(tenant_id, Month.of(datetime.now(UTC)).start.date())
        return policy, month

    policy, month = _run(_with_store(_settings(database_url), apply))
    budget = policy.monthly_token_budget
    limit = policy.monthly_spend_limit
    out.print(
        f"{tenant_id}: {f'{budget:,}' if budget is not None else 'unlimited'} tokens/month, "
        f"{f'${limit:,.2f}' if limit is not None else 'unlimited'} spend/month"
    )
    if month is not None:
        out.print(
            f"this month: {month['tokens']:,} tokens, ${month['cost']:.4f} "
            f"(in flight: {month['reserved_tokens']:,} tokens, ${month['reserved_cost']:.4f})"
        )
