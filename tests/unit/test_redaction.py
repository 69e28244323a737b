"""Secrets never reach a log line: every known shape is masked, in any field, nested or not,
while what is not a secret (a key's public id, token counts, a URL) is kept."""

from __future__ import annotations

import io
import json
import logging
import secrets
import sys
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.api_keys import new_key
from conveyor.observability.logging import configure_logging
from conveyor.observability.redaction import (
    REDACTED,
    redact_event,
    redact_text,
    redact_value,
    remember_secrets,
)


def test_an_api_key_keeps_its_public_id_and_loses_its_secret() -> None:
    issued = new_key(secrets.token_bytes)
    masked = redact_text(f"refused Bearer {issued.token} for {issued.token}")
    assert issued.secret not in masked
    assert f"cvk_{issued.key_id}_{REDACTED}" in masked


@given(st.binary(min_size=38, max_size=38), st.text(max_size=20), st.text(max_size=20))
def test_any_api_key_inside_any_text_is_masked(raw: bytes, before: str, after: str) -> None:
    issued = new_key(lambda n, it=iter([raw[:6], raw[6:]]): next(it))
    text = f"{before} {issued.token} {after}"
    assert issued.secret not in redact_text(text)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://app:s3cretpw@db.internal:5432/conveyor", "s3cretpw"),
        ("could not connect to redis://:hunter22@cache:6379/0", "hunter22"),
        ("host=db user=app password=kw-secret-1 dbname=conveyor", "kw-secret-1"),
        ("Authorization: Bearer abcdef0123456789", "abcdef0123456789"),
        ("sent sk-proj-AbCdEfGhIjKlMnOpQrStUv to openai", "sk-proj-AbCdEfGhIjKlMnOpQrStUv"),
        ("key sk-ant-api03-abcdefghijklmnopqrst", "sk-ant-api03-abcdefghijklmnopqrst"),
        ("google AIzaSyA1234567890abcdefghijklmnopqrstu", "AIzaSyA1234567890abcdefghijklmnopqrstu"),
        ("bad token cvk_not-a-well-formed-key-at-all", "not-a-well-formed-key-at-all"),
    ],
)
def test_each_secret_shape_is_masked(text: str, secret: str) -> None:
    assert secret not in redact_text(text)


def test_what_is_not_a_secret_is_kept() -> None:
    for text in (
        "http://127.0.0.1:8000/v1/tasks",
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "the Authorization header must be 'Bearer <key>'",
        "task 42 of acme on queue chat",
    ):
        assert redact_text(text) == text
    event = {"prompt_tokens": 12, "completion_tokens": 3, "tokens": 15, "key_id": "abc"}
    assert redact_value(event) == event


def test_a_remembered_secret_is_masked_anywhere_and_a_short_one_is_not() -> None:
    remember_secrets(["provider-key-7f3a9c", "k", None])
    assert redact_text("calling with provider-key-7f3a9c!") == f"calling with {REDACTED}!"
    assert redact_text("k is a letter") == "k is a letter"


def test_a_field_named_as_a_secret_is_masked_whole_even_nested() -> None:
    event = {
        "event": "config",
        "api_key": "anything at all",
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "json"},
        "providers": [{"name": "openai", "password": "pw", "client_secret": "x"}],
    }
    masked = redact_event(None, "info", event)
    assert masked["api_key"] == REDACTED
    assert masked["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert masked["providers"] == [
        {"name": "openai", "password": REDACTED, "client_secret": REDACTED}
    ]


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Logging configured as a process does, to a buffer; put back afterwards."""
    saved_config = structlog.get_config()
    saved_handlers = logging.getLogger().handlers[:]
    saved_stderr = sys.stderr
    buffer = io.StringIO()
    sys.stderr = buffer
    try:
        configure_logging("INFO", json_lines=True)
        yield buffer
    finally:
        sys.stderr = saved_stderr
        structlog.configure(**saved_config)
        logging.getLogger().handlers = saved_handlers


def test_configured_logging_masks_structlog_and_stdlib_lines_and_tracebacks(
    json_logs: io.StringIO,
) -> None:
    dsn = "postgresql://app:pw-in-the-dsn@db/conveyor"
    structlog.get_logger("t").info("connecting", dsn=dsn)
    logging.getLogger("asyncpg").warning("lost %s", dsn)
    try:
        raise RuntimeError(f"cannot reach {dsn}")
    except RuntimeError:
        structlog.get_logger("t").exception("failed")
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    assert len(lines) == 3
    assert "pw-in-the-dsn" not in json_logs.getvalue()
    assert lines[0]["dsn"] == "postgresql://app:***@db/conveyor"
