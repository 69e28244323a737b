"""The tenant's monthly LLM budget: tokens and money, enforced before a call is sent.

A tenant whose plan (or its own override) sets ``monthly_token_budget`` or
``monthly_spend_limit`` reserves each attempt's estimate (prompt estimate + ``max_tokens``,
priced from ``llm_prices``) in its ``tenant_llm_usage`` row before the attempt goes out, in
one statement that refuses what does not fit, so however many replicas call at once the
month never overshoots. After the attempt the estimate is released and what it really used
is counted. An exhausted budget raises ``SpendLimitExceeded``: a permanent error for the
task (next month, or a raised limit, is the cure, not a retry), never a breaker failure.

A worker killed mid-call leaves its estimate reserved for the rest of the month: the
conservative side of the error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Protocol

from conveyor.errors import SpendLimitExceeded
from conveyor.gateway.budgets.budget import BudgetAsk, Reservation
from conveyor.store.params import SpendReserve, SpendSettle
from conveyor.store.records import SpendReservation, TenantLLMPolicy


class SpendStore(Protocol):
    """What the spend budget needs of the store (PostgresStore has it)."""

    async def reserve_llm_spend(self, reserve: SpendReserve) -> SpendReservation: ...

    async def settle_llm_spend(self, settle: SpendSettle) -> None: ...


@dataclass(frozen=True, slots=True)
class _Held:
    month: date
    tokens: int
    cost: Decimal


class SpendBudget:
    """The ``Budget`` of tenants' monthly token budgets and spend limits."""

    def __init__(self, store: SpendStore) -> None:
        self._store = store

    async def reserve(self, ask: BudgetAsk) -> Reservation:
        """Reserve the estimate in the tenant's month, or raise SpendLimitExceeded."""
        policy = ask.policy
        if not ask.tenant_id or policy is None or not policy.limits_spend:
            return Reservation(ask)
        got = await self._store.reserve_llm_spend(
            SpendReserve(
                tenant_id=ask.tenant_id,
                provider=ask.provider,
                model=ask.model,
                prompt_tokens=ask.prompt_tokens,
                completion_tokens=ask.max_tokens,
                policy=policy,
            )
        )
        if not got.ok:
            raise SpendLimitExceeded(ask.tenant_id, ask.provider, _why(ask, got, policy))
        return Reservation(ask, (_Held(got.month, ask.estimated_tokens, got.estimate),))

    async def settle(
        self, reservation: Reservation, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Release the estimate; count what the attempt used."""
        if not reservation.holds:
            return
        held = reservation.holds[0]
        assert isinstance(held, _Held)
        ask = reservation.ask
        assert ask.tenant_id is not None
        await self._store.settle_llm_spend(
            SpendSettle(
                tenant_id=ask.tenant_id,
                month=held.month,
                provider=ask.provider,
                model=ask.model,
                reserved_tokens=held.tokens,
                reserved_cost=held.cost,
                prompt_tokens=max(prompt_tokens, 0),
                completion_tokens=max(completion_tokens, 0),
            )
        )


def _why(ask: BudgetAsk, got: SpendReservation, policy: TenantLLMPolicy) -> str:
    parts: list[str] = []
    month = got.month.strftime("%Y-%m")
    if policy.monthly_token_budget is not None:
        parts.append(
            f"{got.tokens:,} of its {policy.monthly_token_budget:,} monthly tokens used or "
            f"reserved in {month}, and this call may need {ask.estimated_tokens:,}"
        )
    if policy.monthly_spend_limit is not None:
        parts.append(
            f"${got.cost:.4f} of its ${policy.monthly_spend_limit:.2f} monthly spend limit used "
            f"or reserved, and this call may cost ${got.estimate:.4f}"
        )
    return (
        "; ".join(parts) + ". Raise the limit (conveyor llm limits TENANT, or the plan's) "
        "or wait for next month"
    )
