"""Ollama's native chat API (``POST /api/chat``): one JSON object, or NDJSON lines.

Ollama streams unless told ``"stream": false``, so the body always says which. The last
line of a stream has ``done: true`` with ``done_reason`` and the counts (``prompt_eval_count``
and ``eval_count``); ``options.num_predict`` is the token cap.
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


class OllamaChat:
    """The wire format of ``/api/chat``."""

    kind = "ollama"
    path = "/api/chat"

    def headers(self, api_key: str | None) -> dict[str, str]:
        """A bearer token only when one is configured (for an Ollama behind a proxy)."""
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The request body; the token cap and temperature go in ``options``."""
        options: dict[str, Any] = {"num_predict": request.max_tokens}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        return {
            "model": request.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in request.messages],
            "stream": request.stream,
            "options": options,
        }

    def parse_reply(self, payload: Any) -> Reply:
        """The single object of a non-streamed reply."""
        text = field(payload, "message", "content")
        if not isinstance(text, str):
            raise BadReply("a chat reply without message.content")
        return self._final(payload, text)

    async def parse_stream(self, lines: AsyncIterator[str]) -> AsyncGenerator[Piece, None]:
        """A piece per line with text; the ``done`` line gives the reason and counts."""
        async for line in lines:
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadReply(f"a stream line is not JSON: {exc}") from None
            error = field(data, "error")
            if error is not None:
                raise BadReply(f"the stream reported an error: {error}")
            text = field(data, "message", "content")
            if field(data, "done") is True:
                final = self._final(data, text if isinstance(text, str) else "")
                yield Piece(
                    text=final.text,
                    finish_reason=final.finish_reason,
                    prompt_tokens=final.prompt_tokens,
                    completion_tokens=final.completion_tokens,
                    model=final.model,
                )
                return
            if isinstance(text, str) and text:
                yield Piece(text=text)

    def error_message(self, payload: Any) -> str | None:
        """``{"error": "..."}``."""
        message = field(payload, "error")
        return message if isinstance(message, str) else None

    @staticmethod
    def _final(payload: Any, text: str) -> Reply:
        return Reply(
            text=text,
            finish_reason=finish_reason(field(payload, "done_reason")),
            prompt_tokens=count(field(payload, "prompt_eval_count")),
            completion_tokens=count(field(payload, "eval_count")),
            model=model_name(field(payload, "model")),
        )
