"""The budget plumbing of the gateway: combined budgets release what they took when one part
refuses, and tenants' policies are read once per key and TTL."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.errors import BudgetRefused, UnknownTenant
from conveyor.gateway.budgets.budget import AdmitAllBudget, BudgetAsk, CombinedBudget, Reservation
from conveyor.gateway.budgets.tenant_policies import TenantPolicies
from conveyor.gateway.scope import CallScope
from conveyor.store.records import TenantLLMPolicy

ASK = BudgetAsk(CallScope(tenant_id="t"), "openai", "gpt", 10, 20)
POLICY = TenantLLMPolicy(60, None, None, None, "local/llama")


class Ledger:
    """A budget part that admits (or refuses) and writes down what it was told."""

    def __init__(self, name: str, log: list[str], refuse: bool = False) -> None:
        self.name, self.log, self.refuse = name, log, refuse

    async def reserve(self, ask: BudgetAsk) -> Reservation:
        if self.refuse:
            self.log.append(f"{self.name} refused")
            raise BudgetRefused(ask.tenant_id, ask.provider, "no")
        self.log.append(f"{self.name} reserved {ask.estimated_tokens}")
        return Reservation(ask, (self.name,))

    async def settle(self, reservation: Reservation, prompt: int, completion: int) -> None:
        self.log.append(f"{self.name} settled {prompt + completion}")


async def test_a_combined_budget_reserves_in_order_and_settles_every_part() -> None:
    log: list[str] = []
    budget = CombinedBudget([Ledger("spend", log), Ledger("drip", log)])
    held = await budget.reserve(ASK)
    await budget.settle(held, 3, 4)
    assert log == ["spend reserved 30", "drip reserved 30", "spend settled 7", "drip settled 7"]


async def test_a_refusal_releases_what_the_parts_before_it_took() -> None:
    log: list[str] = []
    budget = CombinedBudget([Ledger("spend", log), Ledger("drip", log, refuse=True)])
    with pytest.raises(BudgetRefused):
        await budget.reserve(ASK)
    assert log == ["spend reserved 30", "drip refused", "spend settled 0"]


async def test_parts_that_hold_nothing_are_not_settled() -> None:
    log: list[str] = []
    budget = CombinedBudget([AdmitAllBudget(), Ledger("drip", log)])
    held = await budget.reserve(ASK)
    await budget.settle(held, 1, 1)
    assert log == ["drip reserved 30", "drip settled 2"] and len(held.holds) == 1
    assert (await CombinedBudget([AdmitAllBudget()]).reserve(ASK)).holds == ()


async def test_admit_all_holds_nothing() -> None:
    held = await AdmitAllBudget().reserve(ASK)
    assert held.holds == () and held.ask.estimated_tokens == 30


class Policies:
    """Answers policy reads slowly and counts them."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, str]] = []

    async def tenant_llm_policy(self, tenant_id: str, queue: str) -> TenantLLMPolicy:
        self.reads.append((tenant_id, queue))
        await asyncio.sleep(0.01)
        if tenant_id == "ghost":
            raise UnknownTenant([tenant_id])
        return POLICY


async def test_policies_are_read_once_per_key_until_they_expire() -> None:
    now = [0.0]
    source = Policies()
    policies = TenantPolicies(source, ttl=30, clock=lambda: now[0])
    got = await asyncio.gather(*(policies.get("t", "seo") for _ in range(10)))
    assert got == [POLICY] * 10 and source.reads == [("t", "seo")]  # one read for ten callers
    await policies.get("t", "copywriter")
    assert len(source.reads) == 2  # another role, another key
    now[0] = 29.0
    await policies.get("t", "seo")
    assert len(source.reads) == 2
    now[0] = 31.0
    await policies.get("t", "seo")
    assert len(source.reads) == 3  # expired: read again


async def test_an_unknown_tenant_has_no_policy() -> None:
    assert await TenantPolicies(Policies()).get("ghost", None) is None
