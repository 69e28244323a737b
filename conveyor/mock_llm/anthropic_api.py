"""Anthropic's Messages API: ``POST /v1/messages``, whole or as its SSE event sequence.

A stream sends the events the API documents, in its order: ``message_start``,
``content_block_start``, ``ping``, ``content_block_delta`` per token,
``content_block_stop``, ``message_delta`` (stop reason and output usage), ``message_stop``,
so the official ``anthropic`` SDK's stream helpers work unchanged.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from conveyor.mock_llm.exchange import ChatRequest, Exchange, InvalidRequest, dumps
from conveyor.mock_llm.fields import (
    last_user_text,
    parse_messages,
    parse_model,
    positive_int,
)
from conveyor.mock_llm.tokens import text_of

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class AnthropicMessages:
    """The dialect of ``/v1/messages``."""

    api = "anthropic"

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        """The request; ``max_tokens`` is required, as the real API requires it."""
        messages = parse_messages(body)
        max_tokens = positive_int(body, "max_tokens")
        if max_tokens is None:
            raise InvalidRequest("max_tokens: Field required")
        system = text_of(body.get("system"))
        texts = [text_of(m.get("content")) for m in messages]
        return ChatRequest(
            model=parse_model(body),
            message_texts=tuple([system, *texts] if system else texts),
            prompt=last_user_text(messages),
            max_tokens=max_tokens,
            stream=body.get("stream") is True,
        )

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """``{"type": "error", "error": {...}}`` with the type Anthropic uses for ``status``."""
        kind = _ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    async def reply(self, exchange: Exchange) -> web.StreamResponse:
        """A ``message`` object, or the event stream that builds one."""
        exchange.headers["request-id"] = exchange.headers["x-request-id"]
        if exchange.chat.stream:
            return await self._stream(exchange)
        return await exchange.send_whole(
            {
                **self._message(exchange, self._stop_reason(exchange)),
                "content": [{"type": "text", "text": exchange.completion.text}],
                "usage": self._usage(exchange.prompt_tokens, exchange.completion_tokens),
            }
        )

    async def _stream(self, exchange: Exchange) -> web.StreamResponse:
        response = await exchange.open_stream("text/event-stream; charset=utf-8")

        async def event(kind: str, data: dict[str, Any]) -> None:
            await response.write(
                b"event: " + kind.encode() + b"\ndata: " + dumps({"type": kind, **data}) + b"\n\n"
            )

        # The API reports one output token at message_start, then the total in message_delta.
        start = {**self._message(exchange, None), "content": []}
        start["usage"] = self._usage(exchange.prompt_tokens, 1)
        await event("message_start", {"message": start})
        block = {"type": "text", "text": ""}
        await event("content_block_start", {"index": 0, "content_block": block})
        await event("ping", {})
        async for token in exchange.tokens():
            delta = {"type": "text_delta", "text": token}
            await event("content_block_delta", {"index": 0, "delta": delta})
        await event("content_block_stop", {"index": 0})
        await event(
            "message_delta",
            {
                "delta": {"stop_reason": self._stop_reason(exchange), "stop_sequence": None},
                "usage": {"output_tokens": exchange.completion_tokens},
            },
        )
        await event("message_stop", {})
        await response.write_eof()
        return response

    @staticmethod
    def _message(exchange: Exchange, stop_reason: str | None) -> dict[str, Any]:
        return {
            "id": f"msg_mock{exchange.sequence:08d}",
            "type": "message",
            "role": "assistant",
            "model": exchange.chat.model,
            "stop_reason": stop_reason,
            "stop_sequence": None,
        }

    @staticmethod
    def _stop_reason(exchange: Exchange) -> str:
        return "max_tokens" if exchange.completion.truncated else "end_turn"

    @staticmethod
    def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }


def models_list(models: tuple[str, ...], created_at: str) -> dict[str, Any]:
    """The body of Anthropic's ``GET /v1/models`` (asked with an ``anthropic-version``)."""
    data = [{"type": "model", "id": m, "display_name": m, "created_at": created_at} for m in models]
    return {
        "data": data,
        "has_more": False,
        "first_id": models[0] if models else None,
        "last_id": models[-1] if models else None,
    }
