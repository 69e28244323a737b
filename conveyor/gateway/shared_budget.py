"""Provider budgets shared by every worker on every machine, kept in PostgreSQL.

Each provider with ``requests_per_minute`` or ``tokens_per_minute`` in its configuration
has a drip bucket per budget (``llm_buckets``, see core/drip.py). An attempt reserves one
request and its estimated tokens before it is sent, in one statement, and waits for its
slot: callers queue in order instead of hammering the provider into 429s. After the
attempt, the tokens it did not use go back. However many replicas run, the provider never
sees more than its limit in any window: the buckets are shared rows, not process memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from conveyor.core.drip import DripRate
from conveyor.errors import BudgetRefused
from conveyor.gateway.budget import Reservation
from conveyor.gateway.config import GatewayConfig
from conveyor.store.params import BucketDraw

DEFAULT_MAX_WAIT = 300.0
"""A call that would wait longer than this for its slot is refused instead."""


class BucketStore(Protocol):
    """What the budget needs of the store (PostgresStore has it)."""

    async def reserve_llm_budget(self, draws: Sequence[BucketDraw]) -> list[float]: ...

    async def refund_llm_budget(self, draws: Sequence[BucketDraw]) -> None: ...


@dataclass(frozen=True, slots=True)
class ProviderRates:
    """A provider's shared budgets; None is no budget of that kind."""

    requests: DripRate | None
    tokens: DripRate | None


@dataclass(frozen=True, slots=True)
class _Hold:
    draws: tuple[BucketDraw, ...]
    token_rate: DripRate | None


class SharedBudget:
    """The ``Budget`` of a gateway whose providers have request or token limits."""

    def __init__(
        self,
        store: BucketStore,
        rates: dict[str, ProviderRates],
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._rates = rates
        self._max_wait = max_wait
        self._sleep = sleep

    @classmethod
    def for_config(cls, store: BucketStore, config: GatewayConfig) -> SharedBudget | None:
        """The budget the configuration asks for; None when no provider sets a limit."""
        rates = {
            name: ProviderRates(
                DripRate(p.requests_per_minute, p.rate_window) if p.requests_per_minute else None,
                DripRate(p.tokens_per_minute, p.rate_window) if p.tokens_per_minute else None,
            )
            for name, p in config.providers.items()
            if p.requests_per_minute or p.tokens_per_minute
        }
        return cls(store, rates) if rates else None

    async def reserve(
        self, tenant_id: str | None, provider: str, estimated_tokens: int
    ) -> Reservation:
        """Take the next request and token slots of ``provider``; wait for them."""
        rates = self._rates.get(provider)
        if rates is None:
            return Reservation(tenant_id, provider, estimated_tokens)
        planned: list[tuple[BucketDraw, DripRate]] = []
        if rates.requests is not None:
            draw = BucketDraw(provider, "requests", rates.requests.emission)
            planned.append((draw, rates.requests))
        if rates.tokens is not None:
            tokens = min(estimated_tokens, rates.tokens.limit)  # a bigger call still fits once
            draw = BucketDraw(provider, "tokens", tokens * rates.tokens.emission)
            planned.append((draw, rates.tokens))
        draws = tuple(d for d, _ in planned)
        ahead = await self._store.reserve_llm_budget(draws)
        wait = max(rate.wait(a) for (_, rate), a in zip(planned, ahead, strict=True))
        if wait > self._max_wait:
            await self._store.refund_llm_budget(draws)
            raise BudgetRefused(
                tenant_id,
                provider,
                f"the provider's shared budget ({self._describe(rates)}) is booked "
                f"{wait:.0f} s ahead, longer than the {self._max_wait:.0f} s a call may wait",
                retry_after=wait,
            )
        if wait > 0:
            await self._sleep(wait)
        return Reservation(tenant_id, provider, estimated_tokens, _Hold(draws, rates.tokens))

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Give back the tokens the estimate over-reserved."""
        hold = reservation.handle
        if not isinstance(hold, _Hold) or hold.token_rate is None:
            return
        reserved = min(reservation.estimated_tokens, hold.token_rate.limit)
        unused = reserved - max(used_tokens, 0)
        if unused > 0:
            await self._store.refund_llm_budget(
                [BucketDraw(reservation.provider, "tokens", unused * hold.token_rate.emission)]
            )

    @staticmethod
    def _describe(rates: ProviderRates) -> str:
        parts = [
            f"{rate.limit:g} {kind} per {rate.window:g} s"
            for kind, rate in (("requests", rates.requests), ("tokens", rates.tokens))
            if rate is not None
        ]
        return ", ".join(parts)
