"""Human durations: every unit round-trips, parts add up, bad text is named in the error."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.durations import parse_duration

UNIT = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
}
units = st.sampled_from(sorted(UNIT))
amounts = st.integers(min_value=0, max_value=100_000)


@given(amounts, units)
def test_whole_numbers_round_trip_for_every_unit(amount: int, unit: str) -> None:
    assert parse_duration(f"{amount}{unit}") == amount * UNIT[unit]


@given(amounts, units, st.sampled_from(["", " ", "  "]), st.booleans())
def test_case_and_spacing_do_not_matter(amount: int, unit: str, pad: str, upper: bool) -> None:
    text = f"{pad}{amount}{pad}{unit.upper() if upper else unit}{pad}"
    assert parse_duration(text) == amount * UNIT[unit]


@given(st.lists(st.tuples(amounts, units), min_size=1, max_size=5))
def test_combined_parts_add_up(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{amount}{unit}" for amount, unit in parts)
    assert parse_duration(text) == sum((a * UNIT[u] for a, u in parts), timedelta())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2w3d", timedelta(days=17)),
        ("1d 12h", timedelta(hours=36)),
        ("90d", timedelta(days=90)),
        ("45s", timedelta(seconds=45)),
        ("1.5h", timedelta(minutes=90)),
        ("0.5s", timedelta(milliseconds=500)),
        ("0s", timedelta(0)),
    ],
)
def test_documented_examples(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "10",
        "h",
        "10x",
        "-5m",
        "+5m",
        "1e5s",
        "5 minutes",
        "1h30",
        "1h-30m",
        ".5h",
        "1,5h",
        "forever",
        "99999999999w",
        "1" + "0" * 400 + "s",
    ],
)
def test_bad_text_raises_value_error_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_duration(text)


@given(st.text(alphabet="0123456789.wdhmsxyz -", max_size=12))
def test_anything_accepted_is_a_non_negative_timedelta(text: str) -> None:
    try:
        parsed = parse_duration(text)
    except ValueError as exc:
        assert repr(text) in str(exc)
    else:
        assert parsed >= timedelta(0)
