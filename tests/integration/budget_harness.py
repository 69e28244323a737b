"""Two gateways (as two worker processes have) sharing one budget backend, against a mock
provider whose own limit equals the budget: what the provider saw."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from conveyor.core.drip import DripRate
from conveyor.gateway import Gateway, load_gateway_config
from conveyor.gateway.mock import MockConfig, MockLLM, MockStats
from conveyor.gateway.shared_budget import BucketStore, ProviderRates, SharedBudget

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


async def two_gateways_call(backends: Sequence[BucketStore]) -> tuple[int, MockStats, int]:
    """``CALLS`` calls spread over one gateway per backend: (answered, the mock's stats,
    how many calls the budget made wait)."""
    waited = 0

    async def note_wait(seconds: float) -> None:
        nonlocal waited
        waited += 1
        await asyncio.sleep(seconds)

    async with MockLLM(MockConfig(rate_limit_rpm=LIMIT, rate_limit_window=WINDOW)) as mock:
        gateways = []
        for backend in backends:
            loaded = load_gateway_config(config(mock.url, budget=True))
            rates = {"openai": ProviderRates(DripRate(LIMIT, WINDOW), None)}
            gateways.append(Gateway(loaded, budget=SharedBudget(backend, rates, sleep=note_wait)))
        calls = [
            gateways[i % len(gateways)].chat(model="writer", messages=MESSAGES, max_tokens=8)
            for i in range(CALLS)
        ]
        results = await asyncio.gather(*calls)
        for gateway in gateways:
            await gateway.aclose()
        return sum(bool(r.text) for r in results), mock.stats, waited
