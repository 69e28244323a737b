"""Anthropic Messages (``POST /v1/messages``), whole or as its server-sent event sequence.

System messages move to the top-level ``system`` field, as the API requires. A stream is
``message_start`` (input usage), ``content_block_delta`` per text delta, ``message_delta``
(stop reason and output usage) and ``message_stop``; ``ping`` and block start/stop events
carry nothing the gateway needs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from conveyor.gateway.chat import ChatRequest
from conveyor.gateway.providers.base import (
    BadReply,
    Piece,
    Reply,
    count,
    field,
    finish_reason,
    model_name,
)
from conveyor.gateway.providers.sse import sse_events

ANTHROPIC_VERSION = "2023-06-01"


def _input_tokens(usage: Any) -> int | None:
    """Every prompt token: Anthropic reports cache writes and reads apart from the rest."""
    base = count(field(usage, "input_tokens"))
    if base is None:
        return None
    cached = (
        count(field(usage, "cache_creation_input_tokens")) or 0,
        count(field(usage, "cache_read_input_tokens")) or 0,
    )
    return base + sum(cached)


class AnthropicMessages:
    """The wire format of ``/v1/messages``."""

    kind = "anthropic"
    path = "/v1/messages"

    def headers(self, api_key: str | None) -> dict[str, str]:
        """``x-api-key`` and the API version the parsing below was written against."""
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The request body; ``max_tokens`` is required by this API."""
        system = [m["content"] for m in request.messages if m["role"] == "system"]
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [
                {"role": m["role"], "content": m["content"]}
                for m in request.messages
                if m["role"] != "system"
            ],
            "max_tokens": request.max_tokens,
            "stream": request.stream,
        }
        if system:
            body["system"] = "\n\n".join(system)
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    def parse_reply(self, payload: Any) -> Reply:
        """A ``message`` object; its text blocks joined."""
        blocks = field(payload, "content")
        if not isinstance(blocks, list):
            raise BadReply("a message without a content list")
        text = "".join(
            b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
        return Reply(
            text=text,
            finish_reason=finish_reason(field(payload, "stop_reason")),
            prompt_tokens=_input_tokens(field(payload, "usage")),
            completion_tokens=count(field(payload, "usage", "output_tokens")),
            model=model_name(field(payload, "model")),
        )

    async def parse_stream(self, lines: AsyncIterator[str]) -> AsyncGenerator[Piece, None]:
        """Input usage, text deltas, then stop reason and output usage; ends at message_stop."""
        async for event in sse_events(lines):
            try:
                data = json.loads(event.data)
            except json.JSONDecodeError as exc:
                raise BadReply(f"a stream event is not JSON: {exc}") from None
            kind = field(data, "type") or event.event
            if kind == "message_start":
                yield Piece(
                    prompt_tokens=_input_tokens(field(data, "message", "usage")),
                    model=model_name(field(data, "message", "model")),
                )
            elif kind == "content_block_delta":
                text = field(data, "delta", "text")
                if isinstance(text, str) and text:
                    yield Piece(text=text)
            elif kind == "message_delta":
                reason = field(data, "delta", "stop_reason")
                yield Piece(
                    finish_reason=finish_reason(reason) if reason else None,
                    completion_tokens=count(field(data, "usage", "output_tokens")),
                )
            elif kind == "message_stop":
                return
            elif kind == "error":
                raise BadReply(f"the stream reported an error: {self.error_message(data)}")

    def error_message(self, payload: Any) -> str | None:
        """``{"type": "error", "error": {"type": ..., "message": ...}}``."""
        message = field(payload, "error", "message")
        kind = field(payload, "error", "type")
        if not isinstance(message, str):
            return None
        return f"{kind}: {message}" if isinstance(kind, str) else message
