"""Request and token budgets shared by every worker on every machine: drip buckets.

Each provider with ``requests_per_minute`` or ``tokens_per_minute`` in its configuration has
a global drip bucket per budget (see core/drip.py), and each tenant whose plan sets
``llm_requests_per_minute`` or ``llm_tokens_per_minute`` has its own per provider. An
attempt reserves one request and its estimated tokens in every bucket that applies, in one
round trip, and waits for the latest of its slots: callers queue in order instead of
hammering the provider into 429s. After the attempt, the tokens it did not use go back.
However many replicas run, the provider never sees more than its limit in any window: the
buckets live in PostgreSQL (``llm_buckets``) or Redis (``redis_buckets.py``), not in
process memory. A slot further ahead than the task has time left is refused at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from conveyor.core.drip import DEFAULT_MARGIN, DripRate
from conveyor.errors import BudgetRefused
from conveyor.gateway.budgets.bucket_store import BucketStore
from conveyor.gateway.budgets.budget import BudgetAsk, Reservation
from conveyor.gateway.budgets.slot_leases import SlotLeases
from conveyor.gateway.config import GatewayConfig
from conveyor.store.params import BucketDraw

DEFAULT_MAX_WAIT = 300.0
"""A call that would wait longer than this for its slot is refused instead (a task's
remaining time bounds it further)."""


LEASE_SHARE_OF_WINDOW = 0.01
"""The most of a rate window a lease's lateness may take: it widens the drip's margin by as
much, so it costs that share of the budget (0.4 % at 0.25 s of 60 s; at a 1 s window the
full 0.25 s would cost a fifth)."""


def lease_of(budget_lease: float, rate_window: float) -> float:
    """The lateness a provider's leases get: ``budget_lease``, at most 1 % of its window."""
    return min(budget_lease, rate_window * LEASE_SHARE_OF_WINDOW)


@dataclass(frozen=True, slots=True)
class ProviderRates:
    """A provider's shared budgets; None is no budget of that kind."""

    requests: DripRate | None
    tokens: DripRate | None

    @classmethod
    def of(
        cls,
        requests: int | None,
        tokens: int | None,
        window: float,
        margin: float = DEFAULT_MARGIN,
    ) -> ProviderRates:
        """The rates of ``requests`` and ``tokens`` per ``window`` (None or 0: no limit)."""
        return cls(
            DripRate(requests, window, margin) if requests else None,
            DripRate(tokens, window, margin) if tokens else None,
        )


@dataclass(frozen=True, slots=True)
class _Hold:
    token_draws: tuple[tuple[BucketDraw, DripRate], ...]


class SharedBudget:
    """The drip-bucket ``Budget``: the providers' global rates and the tenants' own."""

    def __init__(
        self,
        store: BucketStore,
        rates: dict[str, ProviderRates],
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        tenant_window: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        leases: SlotLeases | None = None,
    ) -> None:
        self._store = store
        self.leases = leases
        self._rates = rates
        self._max_wait = max_wait
        self._tenant_window = tenant_window
        self._sleep = sleep

    @classmethod
    def for_config(cls, store: BucketStore, config: GatewayConfig) -> SharedBudget:
        """The budget of the configuration's provider limits (and of tenants' plans).

        A provider with ``budget_lease`` > 0 has its slots leased ahead of demand
        (``slot_leases.py``), its rates' margin widened by that lateness.
        """
        limited = {
            name: p
            for name, p in config.providers.items()
            if p.requests_per_minute or p.tokens_per_minute
        }
        lateness = {name: lease_of(p.budget_lease, p.rate_window) for name, p in limited.items()}
        rates = {
            name: ProviderRates.of(
                p.requests_per_minute,
                p.tokens_per_minute,
                p.rate_window,
                DEFAULT_MARGIN + lateness[name],
            )
            for name, p in limited.items()
        }
        lateness = {name: late for name, late in lateness.items() if late > 0}
        return cls(store, rates, leases=SlotLeases(store, lateness) if lateness else None)

    def _plan(self, ask: BudgetAsk) -> list[tuple[BucketDraw, DripRate]]:
        planned: list[tuple[BucketDraw, DripRate]] = []
        buckets: list[tuple[str, ProviderRates]] = []
        provider_rates = self._rates.get(ask.provider)
        if provider_rates is not None:
            buckets.append(("", provider_rates))
        policy = ask.policy
        if ask.tenant_id and policy is not None:
            tenant_rates = ProviderRates.of(
                policy.requests_per_minute, policy.tokens_per_minute, self._tenant_window
            )
            if tenant_rates.requests or tenant_rates.tokens:
                buckets.append((ask.tenant_id, tenant_rates))
        for tenant, rates in buckets:
            if rates.requests is not None:
                draw = BucketDraw(ask.provider, "requests", rates.requests.emission, tenant)
                planned.append((draw, rates.requests))
            if rates.tokens is not None:
                tokens = min(ask.estimated_tokens, rates.tokens.limit)  # a big call fits once
                draw = BucketDraw(ask.provider, "tokens", tokens * rates.tokens.emission, tenant)
                planned.append((draw, rates.tokens))
        return planned

    async def reserve(self, ask: BudgetAsk) -> Reservation:
        """Take the next request and token slots of every bucket that applies; wait."""
        planned = self._plan(ask)
        if not planned:
            return Reservation(ask)
        draws = tuple(d for d, _ in planned)
        ahead = self.leases.take(planned) if self.leases is not None else None
        leased = ahead is not None
        if ahead is None:
            ahead = await self._store.reserve_llm_budget(draws)
            if self.leases is not None:
                self.leases.observe(planned, ahead)
        wait = max(rate.wait(a) for (_, rate), a in zip(planned, ahead, strict=True))
        remaining = ask.scope.remaining()
        if wait > self._max_wait or (remaining is not None and wait > remaining):
            if not leased:  # a leased slot is never given back (slot_leases.py)
                await self._store.refund_llm_budget(draws)
            limit = self._max_wait if remaining is None else min(self._max_wait, remaining)
            who = (
                "the task has"
                if remaining is not None and remaining < self._max_wait
                else "a call may wait"
            )
            raise BudgetRefused(
                ask.tenant_id,
                ask.provider,
                f"the request budget ({self._describe(planned)}) is booked {wait:.1f} s "
                f"ahead, longer than the {max(limit, 0.0):.1f} s {who}",
                retry_after=wait,
            )
        slept = 0.0
        if wait > 0:
            began = time.monotonic()
            await self._sleep(wait)
            slept = time.monotonic() - began
        tokens = tuple((draw, rate) for draw, rate in planned if draw.kind == "tokens")
        # Only token draws have anything to give back: without them there is no settle.
        return Reservation(ask, (_Hold(tokens),) if tokens else (), slept)

    async def settle(
        self, reservation: Reservation, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Give back the tokens the estimate over-reserved."""
        if not reservation.holds:
            return
        hold = reservation.holds[0]
        assert isinstance(hold, _Hold)
        used = max(prompt_tokens + completion_tokens, 0)
        refunds = []
        for draw, rate in hold.token_draws:
            reserved = min(reservation.ask.estimated_tokens, rate.limit)
            unused = reserved - used
            if unused > 0:
                refunds.append(
                    BucketDraw(draw.provider, "tokens", unused * rate.emission, draw.tenant_id)
                )
        if refunds:
            await self._store.refund_llm_budget(refunds)

    async def aclose(self) -> None:
        """Give back the slots leased ahead (a gateway closing calls this)."""
        if self.leases is not None:
            await self.leases.aclose()

    @staticmethod
    def _describe(planned: Sequence[tuple[BucketDraw, DripRate]]) -> str:
        parts = [
            f"{'tenant ' + d.tenant_id if d.tenant_id else 'provider'}: "
            f"{rate.limit:g} {d.kind} per {rate.window:g} s"
            for d, rate in planned
        ]
        return ", ".join(parts)
