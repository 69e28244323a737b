"""API key tokens: round trip, hashing, malformed tokens refused."""

from __future__ import annotations

import secrets

from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.api_keys import hash_secret, new_key, parse_token, secret_matches


@given(st.binary(min_size=38, max_size=38))
def test_a_token_parses_back_to_its_key(entropy: bytes) -> None:
    chunks = iter([entropy[:6], entropy[6:]])
    issued = new_key(lambda n: next(chunks))
    parsed = parse_token(issued.token)
    assert parsed == issued
    assert secret_matches(parsed.secret, issued.secret_hash)


@given(st.text(max_size=80))
def test_anything_else_is_not_a_token(text: str) -> None:
    parsed = parse_token(text)
    assert parsed is None or parsed.token == text


def test_only_the_right_secret_matches() -> None:
    one, two = new_key(secrets.token_bytes), new_key(secrets.token_bytes)
    assert one.key_id != two.key_id and len(one.secret) == 43
    assert not secret_matches(two.secret, one.secret_hash)
    assert hash_secret(one.secret) == one.secret_hash and len(one.secret_hash) == 32
