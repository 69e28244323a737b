"""LLM accounting: call records, the tenant's monthly spend, prices and usage totals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from conveyor.errors import UnknownTenant
from conveyor.store.connection import Conn
from conveyor.store.llm_caps import caps_from
from conveyor.store.params import SpendReserve, SpendSettle
from conveyor.store.records import LLMPrice, LLMUsage, SpendReservation, TenantLLMPolicy
from conveyor.store.sql import q


async def record_calls(conn: Conn, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert call records (dicts with the ``llm_calls`` columns but cost) in one statement."""
    if rows:
        await conn.execute(q("record_llm_calls"), list(rows))  # the jsonb codec encodes it


async def tenant_policy(conn: Conn, tenant_id: str, queue: str) -> TenantLLMPolicy:
    """The tenant's LLM limits for ``queue``; UnknownTenant if there is no such tenant."""
    row = await conn.fetchrow(q("tenant_llm_policy"), tenant_id, queue)
    if row is None:
        raise UnknownTenant([tenant_id])
    return TenantLLMPolicy(
        requests_per_minute=row["requests_per_minute"],
        tokens_per_minute=row["tokens_per_minute"],
        monthly_token_budget=row["monthly_token_budget"],
        monthly_spend_limit=row["monthly_spend_limit"],
        model_override=row["model_override"],
        run_caps=caps_from(row, "run_llm_"),
        group_caps=caps_from(row, "group_llm_"),
    )


async def reserve_spend(conn: Conn, reserve: SpendReserve) -> SpendReservation:
    """Reserve a call's estimate against the tenant's month, if it fits."""
    row = await conn.fetchrow(
        q("reserve_llm_spend"),
        reserve.tenant_id,
        reserve.provider,
        reserve.model,
        reserve.prompt_tokens,
        reserve.completion_tokens,
        reserve.policy.monthly_token_budget,
        reserve.policy.monthly_spend_limit,
    )
    assert row is not None  # the function always returns one row
    return SpendReservation(**dict(row))


async def settle_spend(conn: Conn, settle: SpendSettle) -> None:
    """Release a reservation and count what the call used."""
    await conn.execute(
        q("settle_llm_spend"),
        settle.tenant_id,
        settle.month,
        settle.provider,
        settle.model,
        settle.reserved_tokens,
        settle.reserved_cost,
        settle.prompt_tokens,
        settle.completion_tokens,
    )


async def usage(
    conn: Conn,
    tenant_id: str,
    since: datetime,
    group_id: str | None = None,
    task_id: int | None = None,
    until: datetime | None = None,
) -> list[LLMUsage]:
    """Totals of a tenant's calls in [since, until) per (provider, model)."""
    rows = await conn.fetch(q("llm_usage"), tenant_id, since, group_id, task_id, until)
    return [LLMUsage(**dict(row)) for row in rows]


async def tenant_month(conn: Conn, tenant_id: str, month: date) -> dict[str, Any] | None:
    """The month's counters of a tenant with limits (tokens, cost, and in-flight reserved)."""
    row = await conn.fetchrow(q("tenant_llm_month"), tenant_id, month)
    return None if row is None else dict(row)


async def list_prices(conn: Conn) -> list[LLMPrice]:
    """Every price row."""
    return [LLMPrice(**dict(row)) for row in await conn.fetch(q("list_llm_prices"))]


async def set_price(
    conn: Conn, model: str, provider: str, input_per_mtok: Decimal, output_per_mtok: Decimal
) -> LLMPrice:
    """Add or change the price of a model (provider '' : every provider)."""
    row = await conn.fetchrow(q("set_llm_price"), model, provider, input_per_mtok, output_per_mtok)
    assert row is not None
    return LLMPrice(**dict(row))


async def set_tenant_limits(
    conn: Conn,
    tenant_id: str,
    *,
    monthly_token_budget: int | None,
    monthly_spend_limit: Decimal | None,
    clear_tokens: bool = False,
    clear_spend: bool = False,
) -> None:
    """Set (or clear back to the plan's) a tenant's monthly token budget and spend limit."""
    found = await conn.fetchval(
        q("set_tenant_llm_limits"),
        tenant_id,
        monthly_token_budget,
        monthly_spend_limit,
        clear_tokens,
        clear_spend,
    )
    if found is None:
        raise UnknownTenant([tenant_id])
