"""Start rates such as ``10/1m``: parsed into (count, seconds), printed back the same way."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.durations import format_rate, parse_rate

SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@given(
    st.integers(min_value=1, max_value=1_000_000),
    st.integers(min_value=1, max_value=1000),
    st.sampled_from(sorted(SECONDS)),
)
def test_rates_round_trip(count: int, amount: int, unit: str) -> None:
    parsed = parse_rate(f"{count}/{amount}{unit}")
    assert parsed == (count, float(amount * SECONDS[unit]))
    assert parse_rate(format_rate(*parsed)) == parsed


def test_a_bare_unit_means_one_of_it() -> None:
    assert parse_rate("5/s") == (5, 1.0)
    assert parse_rate(" 120 / m ") == (120, 60.0)
    assert format_rate(10, 60) == "10/1m"
    assert format_rate(3, 1.5) == "3/1.5s"


@pytest.mark.parametrize("text", ["", "10", "0/1m", "-1/1m", "x/1m", "10/", "10/abc", "10/0s"])
def test_bad_rates_say_what_a_rate_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid rate|invalid duration"):
        parse_rate(text)
