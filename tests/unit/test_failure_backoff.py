"""FailureBackoff: doubling ceilings, equal jitter, and a fresh start after success."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.backoff import FailureBackoff

uniforms = st.floats(min_value=0.0, max_value=0.999999)


@given(
    base=st.floats(min_value=0.001, max_value=10),
    factor=st.floats(min_value=1, max_value=1000),
    draws=st.lists(uniforms, min_size=1, max_size=60),
)
def test_delays_stay_between_half_the_ceiling_and_the_ceiling(
    base: float, factor: float, draws: list[float]
) -> None:
    backoff = FailureBackoff(base=base, cap=base * factor)
    for n, uniform in enumerate(draws, 1):
        ceiling = min(base * factor, base * 2 ** (n - 1))
        delay = backoff.failed(lambda u=uniform: u)
        assert ceiling / 2 <= delay <= ceiling * (1 + 1e-9)
        assert delay > 0, "a failing loop never spins without a pause"


def test_success_starts_the_ceiling_over() -> None:
    backoff = FailureBackoff(base=0.1, cap=5.0)
    for _ in range(10):
        backoff.failed(lambda: 0.999)
    assert backoff.failed(lambda: 0.999) > 4.9
    backoff.succeeded()
    assert backoff.failed(lambda: 0.999) < 0.1
