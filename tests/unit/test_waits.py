"""The pure rules of durable waits: signal names, wait timeouts, and what a second signal
of a name does."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.waits import (
    MAX_WAIT_SECONDS,
    SIGNAL_NAME_PATTERN,
    Delivery,
    Held,
    check_signal_name,
    check_wait_timeout,
    classify_delivery,
    same_document,
)

NAME = re.compile(SIGNAL_NAME_PATTERN)
names = st.from_regex(NAME, fullmatch=True)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@given(names)
def test_every_name_of_the_pattern_is_accepted(name: str) -> None:
    assert check_signal_name(name) == name
    assert check_signal_name(name, reserved=True) == name


@given(st.text(max_size=140))
def test_a_name_is_accepted_exactly_when_it_fits_the_pattern(name: str) -> None:
    fits = NAME.fullmatch(name) is not None
    if fits:
        assert check_signal_name(name) == name
    else:
        with pytest.raises(ValueError, match="not a signal name"):
            check_signal_name(name)


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,100}", fullmatch=True))
def test_reserved_names_are_conveyors_own(suffix: str) -> None:
    name = f"conveyor:{suffix}"
    with pytest.raises(ValueError):
        check_signal_name(name)
    assert check_signal_name(name, reserved=True) == name


@pytest.mark.parametrize("name", [None, 3, b"approval", "conveyor:", "conveyor: x"])
def test_other_values_are_not_names(name: Any) -> None:
    with pytest.raises(ValueError):
        check_signal_name(name, reserved=True)


@given(st.floats(min_value=1e-6, max_value=MAX_WAIT_SECONDS) | st.integers(1, 31_000_000))
def test_positive_finite_timeouts_up_to_a_year_are_seconds(timeout: float) -> None:
    assert check_wait_timeout(timeout) == float(timeout)


@given(
    st.floats(max_value=0)
    | st.floats(min_value=MAX_WAIT_SECONDS, exclude_min=True)
    | st.sampled_from([math.nan, math.inf, True, "5", [1]])
)
def test_other_timeouts_are_refused(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        check_wait_timeout(timeout)


def test_no_timeout_is_no_deadline() -> None:
    assert check_wait_timeout(None) is None


@given(json_values)
def test_the_first_signal_of_a_name_is_new(payload: Any) -> None:
    assert classify_delivery(None, payload) is Delivery.NEW


@given(json_values, json_values)
def test_after_a_timeout_every_signal_is_too_late(held: Any, payload: Any) -> None:
    assert classify_delivery(Held(held, timed_out=True), payload) is Delivery.TOO_LATE


@given(json_values)
def test_the_same_payload_again_is_a_duplicate_whatever_its_key_order(payload: Any) -> None:
    # as stored: through JSON, with keys in another order
    stored = json.loads(json.dumps(payload))
    reordered = _reversed_keys(payload)
    assert classify_delivery(Held(stored, timed_out=False), reordered) is Delivery.DUPLICATE


@given(json_values, json_values)
def test_a_different_payload_conflicts(held: Any, payload: Any) -> None:
    expected = Delivery.DUPLICATE if same_document(held, payload) else Delivery.CONFLICT
    assert classify_delivery(Held(held, timed_out=False), payload) is expected
    # the rule is symmetric: which came first does not change whether they are the same
    assert same_document(held, payload) == same_document(payload, held)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (True, 1, False),
        (False, 0, False),
        (1, 1.0, True),
        ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ([1, 2], [2, 1], False),
        ("1", 1, False),
        (None, {}, False),
    ],
)
def test_json_sameness(a: Any, b: Any, same: bool) -> None:
    assert same_document(a, b) is same


def _reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(v) for v in value]
    return value
