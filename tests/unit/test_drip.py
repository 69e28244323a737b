"""Drip rates: scheduled-ahead reservations never put more than the limit in any window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.drip import DripRate, schedule

rates = st.builds(
    DripRate,
    limit=st.integers(min_value=2, max_value=10_000).map(float),
    window=st.sampled_from([1.0, 2.0, 60.0]),
    margin=st.sampled_from([0.0, 0.25]),
)


@given(
    rates,
    st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=300),
    st.lists(st.integers(min_value=1, max_value=3), min_size=300, max_size=300),
)
def test_no_window_holds_more_than_the_limit(
    rate: DripRate, gaps: list[float], costs: list[int]
) -> None:
    tat, now, starts = 0.0, 0.0, []
    for gap, cost in zip(gaps, costs, strict=False):
        now += gap
        cost = min(cost, int(rate.burst) or 1)
        tat, start = schedule(rate, tat, now, cost)
        assert start >= now
        starts.append((start, cost))
    starts.sort()
    # even requests that leave their slots up to `margin` late never crowd a window
    span = rate.window + rate.margin
    for i, (begin, _) in enumerate(starts):
        inside = sum(c for s, c in starts[i:] if s < begin + span)
        assert inside <= rate.limit + 1e-6


@given(rates)
def test_reservations_wait_their_turn_in_order(rate: DripRate) -> None:
    tat, previous = 0.0, -1.0
    for _ in range(50):
        tat, start = schedule(rate, tat, 0.0, 1)
        assert start >= previous
        previous = start
