"""Layered timeouts: they nest, a bad one names its field, and the right layer fires."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.llm_timeouts import LayeredTimeouts, TimeoutLayer, next_deadline
from conveyor.errors import ConfigurationError

positive = st.floats(min_value=0.001, max_value=1e4)


@st.composite
def layered(draw: st.DrawFn) -> LayeredTimeouts:
    values = sorted(draw(st.lists(positive, min_size=4, max_size=4)))
    return LayeredTimeouts(*values)


def test_defaults_nest() -> None:
    timeouts = LayeredTimeouts()
    assert timeouts.connect <= timeouts.ttft <= timeouts.gap <= timeouts.total


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"connect": 10.0, "ttft": 5.0}, r"ttft \(5s\) must be at least connect \(10s\)"),
        ({"ttft": 30.0, "gap": 10.0}, r"gap \(10s\) must be at least ttft \(30s\)"),
        ({"gap": 100.0, "total": 50.0}, r"total \(50s\) must be at least gap \(100s\)"),
        ({"connect": 0.0}, "connect must be a finite number"),
        ({"total": float("inf")}, "total must be a finite number"),
        ({"gap": float("nan")}, "gap must be a finite number"),
    ],
)
def test_a_bad_layer_is_named(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        LayeredTimeouts(**fields)


@given(layered(), st.floats(0, 1e4), st.floats(0, 1e4))
def test_before_the_first_token_ttft_or_total_fires(
    timeouts: LayeredTimeouts, started: float, waited: float
) -> None:
    deadline, layer = next_deadline(timeouts, started, started + waited, token_seen=False)
    # ttft <= total, so before the first token the ttft deadline always comes first.
    assert (deadline, layer) == (started + timeouts.ttft, TimeoutLayer.TTFT)


@given(layered(), st.floats(0, 1e4), st.floats(0, 2e4))
def test_after_the_first_token_the_gap_runs_from_now_capped_by_total(
    timeouts: LayeredTimeouts, started: float, waited: float
) -> None:
    now = started + waited
    deadline, layer = next_deadline(timeouts, started, now, token_seen=True)
    assert deadline == min(now + timeouts.gap, started + timeouts.total)
    assert deadline <= started + timeouts.total
    expected = (
        TimeoutLayer.GAP if now + timeouts.gap <= started + timeouts.total else (TimeoutLayer.TOTAL)
    )
    assert layer is expected
    assert timeouts.limit(layer) in (timeouts.gap, timeouts.total)
