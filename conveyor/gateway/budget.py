"""The seam where token budgets plug in: reserve before each attempt, settle after it.

Budgets (token buckets per tenant per provider, a global bucket per provider key, shared by
every worker through PostgreSQL or Redis) are not built yet. The gateway already calls a
``Budget`` around every attempt it sends, so that work is an implementation of this
protocol and nothing else: ``reserve`` may wait for room (the "drip") or raise
``BudgetRefused``; ``settle`` returns what the estimate over-reserved.

The default, ``AdmitAllBudget``, admits everything at once and keeps nothing: it is what a
process without budgets does, not a budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from conveyor.gateway.chat import Message

# A token is about four characters of English; the estimate only sizes a reservation,
# which settle() corrects with the provider's count.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens set aside for one attempt; ``handle`` is the budget backend's own reference
    (a row id, a bucket key), opaque to the gateway."""

    tenant_id: str | None
    provider: str
    estimated_tokens: int
    handle: object = None


class Budget(Protocol):
    """Admits attempts against a tenant's token budget toward a provider."""

    async def reserve(
        self, tenant_id: str | None, provider: str, estimated_tokens: int
    ) -> Reservation:
        """Set ``estimated_tokens`` aside, waiting for room if need be.

        Raises ``BudgetRefused`` when the call must not happen; the gateway then sends
        nothing, does not count it against the provider's breaker, and raises it to the
        caller (no fallback: a budget is the tenant's, not the provider's, problem).
        """
        ...

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """The attempt is over and used ``used_tokens`` (0 if it failed before a reply).

        Called exactly once per reservation, also when the attempt failed or was cancelled.
        An exception here is logged and swallowed: accounting never costs the caller an
        answer it already has, so a backend must expire reservations never settled.
        """
        ...


class AdmitAllBudget:
    """The in-process default: admits every call at once and remembers nothing."""

    async def reserve(
        self, tenant_id: str | None, provider: str, estimated_tokens: int
    ) -> Reservation:
        """A reservation that holds nothing back."""
        return Reservation(tenant_id, provider, estimated_tokens)

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Nothing to return."""


def estimate_prompt_tokens(messages: Sequence[Message]) -> int:
    """A rough prompt size: characters / 4 per message, plus OpenAI's framing tokens."""
    return TOKENS_PER_REPLY + sum(
        math.ceil(len(str(m.get("content", ""))) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE
        for m in messages
    )


def estimate_tokens(messages: Sequence[Message], max_tokens: int) -> int:
    """What to reserve for a call: the prompt estimate plus the most it may generate."""
    return estimate_prompt_tokens(messages) + max_tokens
