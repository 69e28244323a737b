"""Request fields the three chat APIs share: model, messages, token caps."""

from __future__ import annotations

from typing import Any

from conveyor.mock_llm.exchange import InvalidRequest
from conveyor.mock_llm.tokens import text_of


def positive_int(body: dict[str, Any], name: str) -> int | None:
    """An optional whole-number field of at least 1; InvalidRequest names a bad one."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"'{name}' must be an integer of at least 1, got {value!r}")
    return value


def parse_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``messages`` list of objects with a ``role``; InvalidRequest otherwise."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list of messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{index}] must be an object with a 'role'")
    return messages


def parse_model(body: dict[str, Any]) -> str:
    """The required ``model`` name."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string")
    return model


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (the reply echoes it), or of the last message."""
    users = [m for m in messages if m.get("role") == "user"] or messages
    return text_of(users[-1].get("content"))
