"""A leased block of a drip bucket hands out each stretch once, in order, inside the block,
and never a slot that would start later than the lateness bound allows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.slot_block import SLACK, SlotBlock

TOLERANCE, LATENESS = 1.0, 0.25

draws = st.lists(
    st.tuples(
        st.floats(min_value=0.001, max_value=0.5),  # seconds of the draw
        st.floats(min_value=0.0, max_value=0.3),  # time passing before it
    ),
    max_size=40,
)


@given(
    booked_at=st.floats(min_value=0, max_value=10),
    start_ahead=st.floats(min_value=-2, max_value=5),
    length=st.floats(min_value=0.01, max_value=3),
    skew=st.floats(min_value=0, max_value=0.1),
    steps=draws,
)
def test_handed_out_stretches_are_disjoint_ordered_inside_the_block_and_in_time(
    booked_at: float,
    start_ahead: float,
    length: float,
    skew: float,
    steps: list[tuple[float, float]],
) -> None:
    begin = booked_at + start_ahead
    block = SlotBlock(booked_at, begin, begin + length, skew)
    now = booked_at
    last = begin
    for seconds, passing in steps:
        now += passing
        clock = block.clock_after(seconds, now, TOLERANCE, LATENESS)
        if block.expired(now, TOLERANCE, LATENESS):
            assert clock is None  # an expired block serves nothing
        if clock is None:
            continue
        block.take(clock)
        assert clock - seconds >= last - SLACK  # after everything handed out before
        assert clock <= block.end + SLACK  # inside the block
        # The server's clock may be up to `skew` earlier than the block's: judged by it,
        # the slot is still never sent later than allowed.
        slot_start = max(booked_at, clock - skew - TOLERANCE)
        assert now <= slot_start + LATENESS + SLACK
        last = clock


def test_a_fresh_block_serves_draws_back_to_back_until_it_is_spent() -> None:
    block = SlotBlock(booked_at=0.0, cursor=10.0, end=10.3)
    assert block.clock_after(0.1, 0.0, TOLERANCE, LATENESS) == 10.1
    block.take(10.1)
    block.take(block.clock_after(0.1, 0.0, TOLERANCE, LATENESS) or 0.0)
    assert round(block.left(), 9) == 0.1
    assert block.clock_after(0.2, 0.0, TOLERANCE, LATENESS) is None  # too short


def test_stale_slots_are_skipped_not_used() -> None:
    # Booked at 0 on an idle bucket: its slots may start at once, so by 1.0 s the first
    # ones are older than the 0.25 s bound; the draw gets the first slot still in time.
    block = SlotBlock(booked_at=0.0, cursor=0.0, end=2.0)
    clock = block.clock_after(0.1, 1.0, TOLERANCE, LATENESS)
    assert clock is not None
    assert max(0.0, clock - TOLERANCE) >= 1.0 - LATENESS - SLACK
    assert block.clock_after(0.1, 4.0, TOLERANCE, LATENESS) is None  # wholly stale


def test_only_the_unspent_future_is_worth_giving_back() -> None:
    block = SlotBlock(booked_at=0.0, cursor=1.0, end=3.0)
    assert block.future(0.5) == 2.0
    assert block.future(2.5) == 0.5
    assert block.future(4.0) == 0.0
    assert not block.expired(2.0, TOLERANCE, LATENESS)  # its last slot starts at 2.0
    assert block.expired(2.3, TOLERANCE, LATENESS)
    block.take(3.0)
    assert block.expired(0.0, TOLERANCE, LATENESS)  # spent
