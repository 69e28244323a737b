"""What a budget is to the gateway: reserve before each attempt, settle after it.

Before every attempt the gateway asks its ``Budget`` to ``reserve`` the call's
estimate (prompt estimate + ``max_tokens``): a budget may wait for room (the drip) or raise
``BudgetRefused``. After the attempt, ``settle`` gets the tokens it really used, so the
unused part goes back. The budgets built on this seam are the shared drip buckets
(``shared.py``), the tenant's monthly spend (``spend.py``) and the runaway guards of a
task run and a group (``caps.py``); ``CombinedBudget`` runs several as one.
``AdmitAllBudget`` admits everything at once: what a gateway without limits does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from conveyor.gateway.chat import Message
from conveyor.gateway.scope import CallScope
from conveyor.store.records import TenantLLMPolicy

# A token is about four characters of English; the estimate only sizes a reservation,
# which settle() corrects with the provider's count.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3

log = structlog.get_logger("conveyor.gateway")


@dataclass(frozen=True, slots=True)
class BudgetAsk:
    """One attempt's request for room: who, toward which target, how big at most.

    ``policy`` is the tenant's LLM limits (from its plan), None for a call outside any
    tenant or a gateway without a store.
    """

    scope: CallScope
    provider: str
    model: str
    prompt_tokens: int
    max_tokens: int
    policy: TenantLLMPolicy | None = None

    @property
    def tenant_id(self) -> str | None:
        """The tenant the attempt is for."""
        return self.scope.tenant_id

    @property
    def estimated_tokens(self) -> int:
        """The most the attempt can use: the prompt estimate plus ``max_tokens``."""
        return self.prompt_tokens + self.max_tokens


@dataclass(frozen=True, slots=True)
class Reservation:
    """Room set aside for one attempt; ``holds`` are the backends' own references (empty:
    nothing to give back, and ``settle`` may be skipped)."""

    ask: BudgetAsk
    holds: tuple[object, ...] = ()
    waited: float = 0.0
    """Seconds ``reserve`` slept for the slot (the drip), as opposed to its round trip."""


class Budget(Protocol):
    """Admits attempts against budgets: the provider's, the tenant's, or both."""

    async def reserve(self, ask: BudgetAsk) -> Reservation:
        """Set the estimate aside, waiting for room if need be.

        Raises ``BudgetRefused`` when the call must not happen; the gateway then sends
        nothing, does not count it against the provider's breaker, and raises it to the
        caller (no fallback: a budget is the tenant's, not the provider's, problem).
        """
        ...

    async def settle(
        self, reservation: Reservation, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """The attempt is over and used these tokens (0 and 0 if it got no reply).

        Called exactly once per reservation, after the caller has its answer (in the
        background); an exception here is logged and swallowed.
        """
        ...


class AdmitAllBudget:
    """The in-process default: admits every call at once and remembers nothing."""

    async def reserve(self, ask: BudgetAsk) -> Reservation:
        """A reservation that holds nothing back."""
        return Reservation(ask)

    async def settle(
        self, reservation: Reservation, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Nothing to return."""


class CombinedBudget:
    """Several budgets as one: all must admit, in order; a refusal releases the others.

    Put the budget that refuses cheaply first (the monthly spend), so a call that will be
    refused does not take a slot in the drip.
    """

    def __init__(self, parts: Sequence[Budget]) -> None:
        self.parts = tuple(parts)

    async def reserve(self, ask: BudgetAsk) -> Reservation:
        """Every part's reservation; on a refusal the ones already made are released."""
        taken: list[_Part] = []
        waited = 0.0
        try:
            for part in self.parts:
                held = await part.reserve(ask)
                waited += held.waited
                if held.holds:  # a part that holds nothing has nothing to settle
                    taken.append(_Part(part, held))
        except BaseException:
            for held_part in reversed(taken):
                try:
                    await _release(held_part)
                except Exception:
                    log.exception("llm_budget_release_failed", provider=ask.provider)
            raise
        return Reservation(ask, tuple(taken), waited)

    async def aclose(self) -> None:
        """Close every part that has something to close (leased slots to give back)."""
        for part in self.parts:
            close = getattr(part, "aclose", None)
            if close is not None:
                await close()

    async def settle(
        self, reservation: Reservation, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Settle every part that holds something; one's failure does not skip the others."""
        for held_part in reservation.holds:
            assert isinstance(held_part, _Part)
            try:
                await held_part.budget.settle(
                    held_part.reservation, prompt_tokens, completion_tokens
                )
            except Exception:
                log.exception("llm_budget_settle_failed", provider=reservation.ask.provider)


@dataclass(frozen=True, slots=True)
class _Part:
    budget: Budget
    reservation: Reservation


async def _release(part: _Part) -> None:
    """Give back a reservation whose attempt was never sent: a part that tells a release
    from a settle (``release``, the caps: a call not sent is not counted) gets that."""
    release = getattr(part.budget, "release", None)
    if release is not None:
        await release(part.reservation)
    else:
        await part.budget.settle(part.reservation, 0, 0)


def estimate_prompt_tokens(messages: Sequence[Message]) -> int:
    """A rough prompt size: characters / 4 per message, plus OpenAI's framing tokens."""
    return TOKENS_PER_REPLY + sum(
        math.ceil(len(str(m.get("content", ""))) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE
        for m in messages
    )
