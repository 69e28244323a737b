"""OpenAI Chat Completions (``POST /v1/chat/completions``), and every server that copies it.

OpenAI itself, vLLM, Ollama's ``/v1`` endpoint, LiteLLM and most hosted open-model APIs
speak it. A stream is server-sent events of ``chat.completion.chunk`` objects ending in
``data: [DONE]``; the request sets ``stream_options.include_usage`` so the last chunk (with
empty ``choices``) carries the usage.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

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

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]


class OpenAIChat:
    """The wire format of ``/v1/chat/completions``.

    ``max_tokens_field`` names the cap in the body: ``max_tokens`` is what compatible
    servers (vLLM, Ollama, older deployments) accept; OpenAI's reasoning models require
    ``max_completion_tokens``.
    """

    kind = "openai"
    path = "/v1/chat/completions"

    def __init__(self, max_tokens_field: MaxTokensField = "max_tokens") -> None:
        self.max_tokens_field = max_tokens_field

    def headers(self, api_key: str | None) -> dict[str, str]:
        """A bearer token when there is a key (local servers often need none)."""
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The request body; a stream asks for the usage chunk."""
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in request.messages],
            self.max_tokens_field: request.max_tokens,
            "stream": request.stream,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def parse_reply(self, payload: Any) -> Reply:
        """A ``chat.completion`` object."""
        message = field(payload, "choices", 0, "message")
        if not isinstance(message, dict):
            raise BadReply("a chat.completion without choices[0].message")
        text = message.get("content")
        return Reply(
            text=text if isinstance(text, str) else "",
            finish_reason=finish_reason(field(payload, "choices", 0, "finish_reason")),
            prompt_tokens=count(field(payload, "usage", "prompt_tokens")),
            completion_tokens=count(field(payload, "usage", "completion_tokens")),
            model=model_name(field(payload, "model")),
        )

    async def parse_stream(self, lines: AsyncIterator[str]) -> AsyncGenerator[Piece, None]:
        """Text deltas, the finish reason, then the usage chunk; ends at ``[DONE]``."""
        async for event in sse_events(lines):
            if event.data.strip() == "[DONE]":
                return
            try:
                chunk = json.loads(event.data)
            except json.JSONDecodeError as exc:
                raise BadReply(f"a stream event is not JSON: {exc}") from None
            if isinstance(chunk, dict) and "error" in chunk:
                raise BadReply(f"the stream reported an error: {self.error_message(chunk)}")
            usage = field(chunk, "usage")
            if isinstance(usage, dict):
                yield Piece(
                    prompt_tokens=count(usage.get("prompt_tokens")),
                    completion_tokens=count(usage.get("completion_tokens")),
                    model=model_name(field(chunk, "model")),
                )
            for choice in field(chunk, "choices") or ():
                text = field(choice, "delta", "content")
                reason = field(choice, "finish_reason")
                if (isinstance(text, str) and text) or reason:
                    yield Piece(
                        text=text if isinstance(text, str) else "",
                        finish_reason=finish_reason(reason) if reason else None,
                        model=model_name(field(chunk, "model")) if reason else None,
                    )

    def error_message(self, payload: Any) -> str | None:
        """``{"error": {"message": ...}}``."""
        message = field(payload, "error", "message")
        return message if isinstance(message, str) else None
