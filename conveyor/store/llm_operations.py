"""The engine's LLM operations: shared rate buckets, the response cache, call accounting,
prices and tenants' limits (the gateway's ports, ``gateway/stores.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from conveyor.core.llm_caps import CapScope
from conveyor.store import budgets, llm_accounting, llm_cache, llm_caps
from conveyor.store.engine import PoolEngine
from conveyor.store.params import BucketDraw, CapReserve, CapSettle, SpendReserve, SpendSettle
from conveyor.store.records import (
    CapCounter,
    CapReservation,
    LLMPrice,
    LLMUsage,
    SpendReservation,
    TenantLLMPolicy,
)


class LLMOperations(PoolEngine):
    """What the LLM gateway and the LLM commands do with the store."""

    async def reserve_llm_budget(self, draws: Sequence[BucketDraw]) -> list[float]:
        """Take the next slot of each shared bucket; how far each clock now runs ahead."""
        return await self._run(lambda c: budgets.reserve(c, draws))

    async def refund_llm_budget(self, draws: Sequence[BucketDraw]) -> None:
        """Give time back to shared buckets (unused tokens, a refused call)."""
        await self._run(lambda c: budgets.refund(c, draws))

    # -- LLM response cache (see llm_cache.py) ------------------------------------------

    async def llm_cache_get(self, tenant_id: str, key: bytes) -> dict[str, Any] | None:
        """The unexpired reply cached under (tenant, key), or None; counts a hit."""
        return await self._run(lambda c: llm_cache.get(c, tenant_id, key))

    async def llm_cache_put(
        self, tenant_id: str, key: bytes, reply: dict[str, Any], ttl_seconds: float
    ) -> None:
        """Cache ``reply`` under (tenant, key) for ``ttl_seconds``, replacing what was there."""
        await self._run(lambda c: llm_cache.put(c, tenant_id, key, reply, ttl_seconds))

    async def prune_llm_cache(self) -> int:
        """Delete expired cached replies in bounded batches; how many."""
        return await self._run(llm_cache.prune)

    # -- LLM accounting (see llm_accounting.py) ------------------------------------------

    async def record_llm_calls(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert a batch of call records; creates a missing month partition first."""
        await self._with_partitions(
            lambda: self._run(lambda c: llm_accounting.record_calls(c, rows))
        )
        self._events_written()

    async def tenant_llm_policy(self, tenant_id: str, queue: str) -> TenantLLMPolicy:
        """The LLM limits of a tenant's calls from ``queue`` (plan, overrides, model)."""
        return await self._run(lambda c: llm_accounting.tenant_policy(c, tenant_id, queue))

    async def reserve_llm_spend(self, reserve: SpendReserve) -> SpendReservation:
        """Reserve a call's estimate against the tenant's monthly budget, if it fits."""
        return await self._run(lambda c: llm_accounting.reserve_spend(c, reserve))

    async def settle_llm_spend(self, settle: SpendSettle) -> None:
        """Release a spend reservation and count what the call used."""
        await self._run(lambda c: llm_accounting.settle_spend(c, settle))

    # -- runaway guards (see llm_caps.py) -------------------------------------------------

    async def reserve_llm_caps(self, ask: CapReserve) -> CapReservation:
        """Reserve an attempt in its run's and group's caps, if it fits both."""
        return await self._run(lambda c: llm_caps.reserve(c, ask))

    async def settle_llm_caps(self, done: CapSettle) -> None:
        """Release or settle an attempt's reservations in its run and group."""
        await self._run(lambda c: llm_caps.settle(c, done))

    async def llm_cap_counter(self, tenant_id: str, scope: CapScope, key: str) -> CapCounter | None:
        """A task's (``CapScope.RUN``, its id) or group's caps and counters; None: uncapped."""
        return await self._run(lambda c: llm_caps.counter(c, tenant_id, scope, key))

    async def llm_usage(
        self,
        tenant_id: str,
        since: datetime,
        *,
        group_id: str | None = None,
        task_id: int | None = None,
        until: datetime | None = None,
    ) -> list[LLMUsage]:
        """A tenant's LLM calls in [since, until) per (provider, model): tokens and cost."""
        return await self._run(
            lambda c: llm_accounting.usage(c, tenant_id, since, group_id, task_id, until)
        )

    async def tenant_llm_month(self, tenant_id: str, month: date) -> dict[str, Any] | None:
        """A limited tenant's counters for ``month`` (None: no limited call yet)."""
        return await self._run(lambda c: llm_accounting.tenant_month(c, tenant_id, month))

    async def list_llm_prices(self) -> list[LLMPrice]:
        """The price table."""
        return await self._run(llm_accounting.list_prices)

    async def set_llm_price(
        self, model: str, provider: str, input_per_mtok: Decimal, output_per_mtok: Decimal
    ) -> LLMPrice:
        """Add or change a model's price (USD per million tokens)."""
        return await self._run(
            lambda c: llm_accounting.set_price(c, model, provider, input_per_mtok, output_per_mtok)
        )

    async def set_tenant_llm_limits(
        self,
        tenant_id: str,
        *,
        monthly_token_budget: int | None = None,
        monthly_spend_limit: Decimal | None = None,
        clear_tokens: bool = False,
        clear_spend: bool = False,
    ) -> None:
        """Set a tenant's own monthly token budget / spend limit, or clear it to the plan's."""
        await self._run(
            lambda c: llm_accounting.set_tenant_limits(
                c,
                tenant_id,
                monthly_token_budget=monthly_token_budget,
                monthly_spend_limit=monthly_spend_limit,
                clear_tokens=clear_tokens,
                clear_spend=clear_spend,
            )
        )
