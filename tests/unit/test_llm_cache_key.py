"""The response cache's key: stable for equal calls, different for different ones, and None
for calls that are not deterministic."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from conveyor.errors import ConfigurationError
from conveyor.gateway.accounting.response_cache import ResponseCache

key = ResponseCache.key

roles = st.sampled_from(["system", "user", "assistant"])
extras = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(lambda k: k not in {"role", "content"}),
    st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none()),
    max_size=3,
)
message = st.builds(lambda r, c, x: {"role": r, "content": c, **x}, roles, st.text(), extras)
messages = st.lists(message, min_size=1, max_size=4)
models = st.text(min_size=1, max_size=30)
max_tokens = st.integers(min_value=1, max_value=1_000_000)
zeros = st.sampled_from([0, 0.0, -0.0])


@given(models, messages, max_tokens, zeros)
def test_equal_calls_have_one_key(
    model: str, msgs: list[dict[str, Any]], tokens: int, zero: float
) -> None:
    first = key(model, msgs, tokens, zero)
    assert isinstance(first, bytes) and len(first) == 32
    copied = [dict(m) for m in msgs]
    assert key(model, copied, tokens, 0.0) == first
    assert key(model, tuple(copied), tokens, 0) == first


@given(messages, models, max_tokens)
def test_the_order_of_keys_inside_a_message_does_not_matter(
    msgs: list[dict[str, Any]], model: str, tokens: int
) -> None:
    reordered = [dict(reversed(list(m.items()))) for m in msgs]
    assert key(model, reordered, tokens, 0) == key(model, msgs, tokens, 0)


@given(models, models, messages, max_tokens)
def test_another_model_or_alias_is_another_key(
    model: str, other: str, msgs: list[dict[str, Any]], tokens: int
) -> None:
    assume(model != other)
    assert key(model, msgs, tokens, 0) != key(other, msgs, tokens, 0)


@given(models, messages, messages, max_tokens)
def test_other_messages_are_another_key(
    model: str, msgs: list[dict[str, Any]], others: list[dict[str, Any]], tokens: int
) -> None:
    assume(msgs != others)
    assert key(model, msgs, tokens, 0) != key(model, others, tokens, 0)


@given(models, messages, max_tokens, max_tokens)
def test_another_max_tokens_is_another_key(
    model: str, msgs: list[dict[str, Any]], tokens: int, other: int
) -> None:
    assume(tokens != other)
    assert key(model, msgs, tokens, 0) != key(model, msgs, other, 0)


@given(models, messages, max_tokens)
def test_the_order_of_messages_matters(model: str, msgs: list[dict[str, Any]], tokens: int) -> None:
    assume(msgs != msgs[::-1])
    assert key(model, msgs, tokens, 0) != key(model, msgs[::-1], tokens, 0)


@given(
    models,
    messages,
    max_tokens,
    st.one_of(st.none(), st.floats().filter(lambda t: t != 0), st.booleans()),
)
def test_a_call_that_is_not_deterministic_has_no_key(
    model: str, msgs: list[dict[str, Any]], tokens: int, temperature: float | None
) -> None:
    assert key(model, msgs, tokens, temperature) is None


def test_messages_json_cannot_encode_have_no_key() -> None:
    assert key("writer", [{"role": "user", "content": "hi", "x": math.nan}], 10, 0) is None
    assert key("writer", [{"role": "user", "content": "hi", "x": object()}], 10, 0) is None


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan, True, "60"])
def test_a_ttl_that_is_not_a_positive_number_is_refused(ttl: Any) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        ResponseCache(store=None, ttl=ttl)  # type: ignore[arg-type]
