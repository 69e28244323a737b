"""The door's rate limit: blocks booked on a shared drip bucket, the slots that may go now
kept and the rest given back, never put more than the limit in a window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.door_rate import apportion
from conveyor.core.drip import DripRate

rates = st.builds(
    DripRate,
    limit=st.integers(min_value=2, max_value=600).map(float),
    window=st.sampled_from([1.0, 60.0]),
    margin=st.sampled_from([0.25, 0.5]),
)

# (gap since the previous booking, block size) of bookings by any number of processes.
bookings = st.lists(
    st.tuples(st.floats(min_value=0, max_value=2), st.integers(min_value=1, max_value=40)),
    min_size=1,
    max_size=300,
)


@given(rates, bookings)
def test_kept_slots_never_crowd_a_window(rate: DripRate, asks: list[tuple[float, int]]) -> None:
    tat, now, kept = 0.0, 0.0, []
    for gap, size in asks:
        now += gap
        tat = max(tat, now) + size * rate.emission  # reserve_llm_budget
        booking = apportion(rate, tat - now, size)
        tat -= booking.give_back * rate.emission  # refund_llm_budget
        assert booking.usable + booking.give_back == size
        assert booking.wait == 0 or booking.usable == 0
        kept += [now] * booking.usable
    # a slot is used up to `margin` late (the block goes stale then): a span of
    # window + margin of booking instants holds at most the limit
    span = rate.window + rate.margin
    for i, begin in enumerate(kept):
        inside = sum(1 for s in kept[i:] if s < begin + span)
        assert inside <= rate.limit + 1e-6


@given(rates, st.integers(min_value=1, max_value=100))
def test_an_idle_bucket_gives_a_block_within_the_burst_whole(rate: DripRate, size: int) -> None:
    booking = apportion(rate, size * rate.emission, size)
    if size <= rate.burst:
        assert booking.usable == size and booking.give_back == 0 and booking.wait == 0


def test_a_full_bucket_says_when_the_next_slot_frees() -> None:
    rate = DripRate(60, 60.0, 0.0)  # burst 1, one a second
    assert rate.emission == pytest.approx(60 / 59)
    full = apportion(rate, 3 * rate.emission, 1)  # two ahead of the burst
    assert full.usable == 0 and full.give_back == 1
    assert full.wait == pytest.approx(2 * rate.emission)
    with pytest.raises(ValueError):
        apportion(rate, 0.0, 0)
