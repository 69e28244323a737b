"""The cap arithmetic of the runaway guards (``conveyor/core/llm_caps.py``)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor import App, TaskContext
from conveyor.core.llm_caps import (
    CapDimension,
    CapScope,
    CapSet,
    CapSource,
    CapUsage,
    LLMCaps,
    attempt_ask,
    breach,
)
from conveyor.errors import ConfigurationError

counts = st.integers(min_value=0, max_value=10**9)
money = st.decimals(min_value=0, max_value=10**4, places=8, allow_nan=False)
caps = st.builds(LLMCaps, st.none() | counts, st.none() | counts, st.none() | money)
sourced = st.lists(st.tuples(st.sampled_from(CapSource), st.none() | caps), max_size=5)
usages = st.builds(CapUsage, counts, counts, money)


@given(sourced)
def test_the_tightest_limit_of_each_dimension_wins_and_names_its_first_setter(
    given_caps: list[tuple[CapSource, LLMCaps | None]],
) -> None:
    merged = CapSet.tightest(CapScope.RUN, given_caps)
    for dimension in CapDimension:
        limits = [(s, c.limit(dimension)) for s, c in given_caps if c is not None]
        present = [(s, v) for s, v in limits if v is not None]
        cap = getattr(merged, dimension.value)
        if not present:
            assert cap is None
            continue
        smallest = min(v for _, v in present)
        assert cap.limit == smallest and cap.scope is CapScope.RUN
        assert cap.source == next(s for s, v in present if v == smallest)
    assert merged.empty == all(c is None or c.empty for _, c in given_caps)


@given(sourced, st.sampled_from(CapSource), st.none() | caps)
def test_tightening_equals_merging_everything_at_once(
    given_caps: list[tuple[CapSource, LLMCaps | None]],
    source: CapSource,
    more: LLMCaps | None,
) -> None:
    merged = CapSet.tightest(CapScope.GROUP, given_caps)
    assert merged.tightened(source, more).limits() == (
        CapSet.tightest(CapScope.GROUP, [*given_caps, (source, more)]).limits()
    )


@given(caps, usages, usages)
def test_an_attempt_is_refused_exactly_when_it_would_cross_a_cap(
    limits: LLMCaps, used: CapUsage, ask: CapUsage
) -> None:
    found = breach(CapSet.tightest(CapScope.RUN, [(CapSource.SUBMIT, limits)]), used, ask)
    crossing = [
        d
        for d in CapDimension
        if (limit := limits.limit(d)) is not None and used.of(d) + ask.of(d) > limit
    ]
    if not crossing:
        assert found is None
    else:
        assert found is not None and found.cap.dimension == crossing[0]
        assert (found.used, found.needed) == (used.of(crossing[0]), ask.of(crossing[0]))


@given(
    st.integers(min_value=0, max_value=2_000),
    money,
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), max_size=60),
)
def test_admitting_worst_cases_then_settling_actuals_never_passes_the_cap(
    token_cap: int, cost_cap: Decimal, calls: list[tuple[int, int]]
) -> None:
    """A sequential agent: each call asks its worst case, then uses at most that."""
    limits = CapSet.tightest(
        CapScope.RUN, [(CapSource.ROLE, LLMCaps(calls=40, tokens=token_cap, cost=cost_cap))]
    )
    used = CapUsage()
    for worst, actual in calls:
        ask = attempt_ask(worst, Decimal(worst) / 10**6)
        if breach(limits, used, ask) is not None:
            assert (
                used.plus(ask).tokens > token_cap
                or used.calls + 1 > 40
                or (used.cost + ask.cost > cost_cap)
            )
            break
        spent = min(actual, worst)
        used = used.plus(attempt_ask(spent, Decimal(spent) / 10**6))
        assert used.tokens <= token_cap and used.calls <= 40 and used.cost <= cost_cap


@given(usages, usages)
def test_taking_back_never_goes_below_zero(one: CapUsage, other: CapUsage) -> None:
    left = one.minus(other)
    assert left.calls >= 0 and left.tokens >= 0 and left.cost >= 0
    assert one.plus(other).minus(other) == one


@pytest.mark.parametrize(
    "bad",
    [
        {"calls": -1},
        {"tokens": True},
        {"tokens": 1.5},
        {"cost": Decimal("-0.01")},
        {"cost": Decimal("NaN")},
        {"cost": 0.5},
    ],
)
def test_a_malformed_cap_is_refused_naming_its_field(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match=f"caps: {next(iter(bad))}"):
        LLMCaps(**bad)  # type: ignore[arg-type]


def test_a_refusal_says_which_cap_its_limit_what_was_used_and_who_set_it() -> None:
    limits = CapSet.tightest(
        CapScope.GROUP,
        [(CapSource.PLAN, LLMCaps(cost=Decimal(5))), (CapSource.GROUP, LLMCaps(cost=2))],
    )
    found = breach(limits, CapUsage(3, 900, Decimal("1.99")), attempt_ask(80, Decimal("0.02")))
    assert found is not None
    assert found.describe() == (
        "the group cap of $2.000000 (set by the group) would be crossed: $1.990000 used or in "
        "flight, and this call may need $0.020000"
    )
    calls = CapSet.tightest(CapScope.RUN, [(CapSource.ROLE, LLMCaps(calls=1_000))])
    over = breach(calls, CapUsage(1_000, 0, Decimal(0)), attempt_ask(1, Decimal(0)))
    assert over is not None and over.cap.describe() == (
        "the run cap of 1,000 LLM calls (set by the role)"
    )


def test_an_agent_takes_caps_as_llm_caps_only() -> None:
    app = App("guards")
    with pytest.raises(ConfigurationError, match="caps must be an LLMCaps"):
        app.agent("research", caps={"calls": 5})  # type: ignore[arg-type]
    app.agent("writer", caps=LLMCaps(calls=5))(_handler)
    app.agent("editor", caps=LLMCaps())(_handler)  # no limit at all: no caps
    assert app.agents["writer"].caps == LLMCaps(calls=5)
    assert app.agents["editor"].caps is None


async def _handler(ctx: TaskContext, payload: dict[str, object]) -> None:
    return None
