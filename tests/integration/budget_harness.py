"""Two gateways (as two worker processes have) sharing one budget backend, against a mock
provider whose own limit equals the budget: what the provider saw."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from conveyor.core.drip import DEFAULT_MARGIN, DripRate
from conveyor.gateway import Gateway, load_gateway_config
from conveyor.gateway.budgets.shared import BucketStore, ProviderRates, SharedBudget
from conveyor.gateway.budgets.slot_leases import SlotLeases
from conveyor.mock_llm import MockConfig, MockLLM, MockStats

LIMIT, WINDOW = 20, 2.0  # the provider's own limit, and the budget set to the same
MESSAGES = [{"role": "user", "content": "write a slogan for shoes"}]
CALLS = 30


def config(url: str, *, budget: bool, attempts: int = 3) -> dict[str, Any]:
    provider: dict[str, Any] = {"kind": "openai", "base_url": url, "api_key": "k"}
    if budget:
        provider |= {"requests_per_minute": LIMIT, "rate_window": WINDOW}
    return {
        "providers": {"openai": provider},
        "aliases": {"writer": ["openai/mock-gpt"]},
        "retry": {"max_attempts": attempts, "base": 0.01, "cap": 0.05},
    }


class Seen(NamedTuple):
    answered: int
    stats: MockStats
    waited: int
    """Calls the budget made wait."""
    leased: int
    """Calls whose slot came from a lease (no round trip)."""


async def two_gateways_call(
    backends: Sequence[BucketStore], *, lateness: float = 0.0, spacing: float = 0.0
) -> Seen:
    """``CALLS`` calls spread over one gateway per backend, one every ``spacing`` seconds
    (0: all at once); with ``lateness`` > 0 each gateway leases slots ahead of demand."""
    waited = 0

    async def note_wait(seconds: float) -> None:
        nonlocal waited
        waited += 1
        await asyncio.sleep(seconds)

    async with MockLLM(MockConfig(rate_limit_rpm=LIMIT, rate_limit_window=WINDOW)) as mock:
        gateways = []
        for backend in backends:
            loaded = load_gateway_config(config(mock.url, budget=True))
            rate = DripRate(LIMIT, WINDOW, DEFAULT_MARGIN + lateness)
            leases = SlotLeases(backend, {"openai": lateness}) if lateness else None
            budget = SharedBudget(
                backend, {"openai": ProviderRates(rate, None)}, sleep=note_wait, leases=leases
            )
            gateways.append(Gateway(loaded, budget=budget))

        async def call(i: int) -> bool:
            await asyncio.sleep(i * spacing)
            gateway = gateways[i % len(gateways)]
            result = await gateway.chat(model="writer", messages=MESSAGES, max_tokens=8)
            return bool(result.text)

        results = await asyncio.gather(*(call(i) for i in range(CALLS)))
        leased = 0
        for gateway in gateways:
            assert isinstance(gateway.budget, SharedBudget)
            if gateway.budget.leases is not None:
                leased += gateway.budget.leases.served
            await gateway.aclose()
        return Seen(sum(results), mock.stats, waited, leased)


def assert_the_limit_held(seen: Seen, *, leased: bool = False) -> None:
    """Every call answered, the provider never refused one for its limit, the calls past
    the limit waited their turn, and (``leased``) some took slots leased ahead."""
    assert seen.answered == CALLS
    assert seen.stats.limit_429s == 0, seen.stats
    assert seen.waited >= CALLS - LIMIT, seen.waited
    if leased:
        assert seen.leased > 0, seen
