"""Runaway guards: caps on a task run's and a group's LLM calls, tokens and money.

A cap may be set by several parties at once: the agent's role (``@app.agent(...,
caps=LLMCaps(...))``), the tenant's plan, the submit (a task's own caps) and the group's
creation (a campaign's caps). ``CapSet.tightest`` keeps, per dimension, the smallest limit
and who set it. ``breach`` says whether one more attempt, at its worst case (one call, its
prompt estimate plus ``max_tokens``, and their price), would cross a cap: the same test the
database applies atomically when it reserves the attempt (``conveyor_reserve_llm_caps``),
so the error it raises can name the cap, its limit, what is used and who set it.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from conveyor.errors import ConfigurationError


class CapScope(StrEnum):
    """What a cap bounds: one task (all its attempts), or every task of a group."""

    RUN = "run"
    GROUP = "group"


class CapSource(StrEnum):
    """Who set a cap."""

    ROLE = "role"
    """The agent's registration: ``@app.agent(..., caps=LLMCaps(...))`` (run caps)."""
    PLAN = "plan"
    """The tenant's plan: ``conveyor plans set PLAN --run-calls ... --group-cost ...``."""
    SUBMIT = "submit"
    """The task's submit: ``caps`` of ``POST /v1/tasks`` (run caps)."""
    GROUP = "group"
    """The group's creation: ``caps`` of ``POST /v1/groups`` (group caps)."""


class CapDimension(StrEnum):
    """What a cap counts."""

    CALLS = "calls"
    """Attempts sent to a provider (a retry or a fallback is one more; a cache hit none)."""
    TOKENS = "tokens"
    """Prompt plus completion tokens, as the provider reported them."""
    COST = "cost"
    """USD, priced from ``llm_prices`` (a model without a price costs nothing)."""


Amount = int | Decimal


@dataclass(frozen=True, slots=True)
class LLMCaps:
    """Limits on LLM use; None: no limit on that dimension. ``cost`` is in USD."""

    calls: int | None = None
    tokens: int | None = None
    cost: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("calls", "tokens"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ConfigurationError(f"caps: {name} must be a whole number >= 0, not {value!r}")
        if self.cost is not None:
            if not isinstance(self.cost, Decimal | int) or isinstance(self.cost, bool):
                raise ConfigurationError(
                    f"caps: cost must be a Decimal number of USD, not {self.cost!r}"
                )
            if not Decimal(self.cost).is_finite() or self.cost < 0:
                raise ConfigurationError(f"caps: cost must be >= 0 USD, not {self.cost!r}")
            object.__setattr__(self, "cost", Decimal(self.cost))

    @property
    def empty(self) -> bool:
        """No limit at all."""
        return self.calls is None and self.tokens is None and self.cost is None

    def limit(self, dimension: CapDimension) -> Amount | None:
        """The limit on ``dimension`` (None: none)."""
        value: Amount | None = getattr(self, dimension.value)
        return value


NO_CAPS = LLMCaps()


@dataclass(frozen=True, slots=True)
class Cap:
    """One limit in force: what it counts, how much, and who set it."""

    scope: CapScope
    dimension: CapDimension
    limit: Amount
    source: CapSource

    def alone(self) -> LLMCaps:
        """This cap as the only limit of an ``LLMCaps``."""
        if self.dimension is CapDimension.COST:
            return LLMCaps(cost=Decimal(self.limit))
        if self.dimension is CapDimension.TOKENS:
            return LLMCaps(tokens=int(self.limit))
        return LLMCaps(calls=int(self.limit))

    def describe(self) -> str:
        """``the run cap of 20 LLM calls (set by the role)``."""
        amount = amount_text(self.dimension, self.limit)
        if self.dimension is not CapDimension.COST:
            amount += " LLM calls" if self.dimension is CapDimension.CALLS else " tokens"
        return f"the {self.scope.value} cap of {amount} (set by the {self.source.value})"


@dataclass(frozen=True, slots=True)
class CapSet:
    """The caps of one scope in force: the tightest limit per dimension and its source."""

    scope: CapScope
    calls: Cap | None = None
    tokens: Cap | None = None
    cost: Cap | None = None

    @classmethod
    def tightest(
        cls, scope: CapScope, sourced: Iterable[tuple[CapSource, LLMCaps | None]]
    ) -> CapSet:
        """Per dimension, the smallest limit of ``sourced``; on a tie the first source."""
        best: dict[CapDimension, Cap] = {}
        for source, caps in sourced:
            if caps is None:
                continue
            for dimension in CapDimension:
                limit = caps.limit(dimension)
                if limit is None:
                    continue
                held = best.get(dimension)
                if held is None or limit < held.limit:
                    best[dimension] = Cap(scope, dimension, limit, source)
        return cls(
            scope,
            best.get(CapDimension.CALLS),
            best.get(CapDimension.TOKENS),
            best.get(CapDimension.COST),
        )

    @classmethod
    def from_document(cls, scope: CapScope, document: Mapping[str, Any] | None) -> CapSet:
        """The caps ``document()`` wrote (an unknown dimension or source is skipped)."""
        sourced: list[tuple[CapSource, LLMCaps]] = []
        for name, entry in (document or {}).items():
            try:
                dimension, source = CapDimension(name), CapSource(entry["source"])
                limit = Decimal(str(entry["limit"]))
                cap = Cap(scope, dimension, limit, source).alone()
            except (KeyError, TypeError, ValueError, ArithmeticError, ConfigurationError):
                continue
            sourced.append((source, cap))
        return cls.tightest(scope, sourced)

    def document(self) -> dict[str, Any] | None:
        """These caps as JSON (``{"calls": {"limit": "20", "source": "role"}}``); None when
        there are none. Limits are text, so money keeps its decimals."""
        if self.empty:
            return None
        return {
            c.dimension.value: {"limit": str(c.limit), "source": c.source.value}
            for c in self.caps()
        }

    def tightened(self, source: CapSource, caps: LLMCaps | None) -> CapSet:
        """These caps and ``caps`` of ``source``, the tightest per dimension (a tie keeps
        the cap already here)."""
        mine = ((c.source, c.alone()) for c in self.caps())
        return CapSet.tightest(self.scope, [*mine, (source, caps)])

    @property
    def empty(self) -> bool:
        """No cap in force."""
        return self.calls is None and self.tokens is None and self.cost is None

    def caps(self) -> tuple[Cap, ...]:
        """The caps in force, calls first."""
        return tuple(c for c in (self.calls, self.tokens, self.cost) if c is not None)

    def limits(self) -> LLMCaps:
        """The limits alone."""
        return LLMCaps(
            calls=None if self.calls is None else int(self.calls.limit),
            tokens=None if self.tokens is None else int(self.tokens.limit),
            cost=None if self.cost is None else Decimal(self.cost.limit),
        )


@dataclass(frozen=True, slots=True)
class CapUsage:
    """What a scope has used (settled) plus what its attempts in flight hold (reserved)."""

    calls: int = 0
    tokens: int = 0
    cost: Decimal = Decimal(0)

    def of(self, dimension: CapDimension) -> Amount:
        """The amount of ``dimension``."""
        value: Amount = getattr(self, dimension.value)
        return value

    def plus(self, other: CapUsage) -> CapUsage:
        """Both together."""
        return CapUsage(
            self.calls + other.calls, self.tokens + other.tokens, self.cost + other.cost
        )

    def minus(self, other: CapUsage) -> CapUsage:
        """``self`` with ``other`` taken away, never below zero (a release after a reset)."""
        return CapUsage(
            max(self.calls - other.calls, 0),
            max(self.tokens - other.tokens, 0),
            max(self.cost - other.cost, Decimal(0)),
        )


def attempt_ask(estimated_tokens: int, estimated_cost: Decimal) -> CapUsage:
    """The worst case of one attempt: one call, its prompt estimate plus ``max_tokens``,
    and their price."""
    return CapUsage(1, estimated_tokens, estimated_cost)


@dataclass(frozen=True, slots=True)
class CapBreach:
    """An attempt refused: the cap it would cross, what was used, what it needed."""

    cap: Cap
    used: Amount
    needed: Amount

    def describe(self) -> str:
        """What went wrong, in one clause."""
        dimension = self.cap.dimension
        return (
            f"{self.cap.describe()} would be crossed: {amount_text(dimension, self.used)} "
            f"used or in flight, and this call may need {amount_text(dimension, self.needed)}"
        )


def breach(caps: CapSet, used: CapUsage, ask: CapUsage) -> CapBreach | None:
    """The first cap ``used + ask`` would cross, or None when the attempt fits all."""
    for cap in caps.caps():
        have, want = used.of(cap.dimension), ask.of(cap.dimension)
        if have + want > cap.limit:
            return CapBreach(cap, have, want)
    return None


def amount_text(dimension: CapDimension, value: Amount) -> str:
    """``1,200`` calls or tokens, ``$0.015000`` of money."""
    if dimension is CapDimension.COST:
        return f"${Decimal(value):,.6f}"
    return f"{int(value):,}"
