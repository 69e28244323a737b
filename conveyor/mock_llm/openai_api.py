"""OpenAI's Chat Completions API: ``POST /v1/chat/completions``, whole or as SSE chunks.

The shapes follow the API reference closely enough that the official ``openai`` SDK parses
them unchanged: a ``chat.completion`` object, or ``chat.completion.chunk`` events ending in
``data: [DONE]``, with a final usage chunk (empty ``choices``) when the request sets
``stream_options.include_usage``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from conveyor.mock_llm.exchange import ChatRequest, Exchange, InvalidRequest, dumps
from conveyor.mock_llm.fields import last_user_text, parse_messages, parse_model, positive_int
from conveyor.mock_llm.tokens import text_of

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
FINGERPRINT = "fp_conveyor_mock"


class OpenAIChat:
    """The dialect of ``/v1/chat/completions``."""

    api = "openai"

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        """The request; max_completion_tokens wins over the older max_tokens."""
        messages = parse_messages(body)
        max_tokens = positive_int(body, "max_completion_tokens") or positive_int(body, "max_tokens")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object")
        return ChatRequest(
            model=parse_model(body),
            message_texts=tuple(text_of(m.get("content")) for m in messages),
            prompt=last_user_text(messages),
            max_tokens=max_tokens,
            stream=body.get("stream") is True,
            include_usage=options.get("include_usage") is True,
        )

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """``{"error": {...}}`` with the type OpenAI uses for ``status``."""
        kind = _ERROR_TYPES.get(status, "server_error")
        code = "rate_limit_exceeded" if status == 429 else None
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    async def reply(self, exchange: Exchange) -> web.StreamResponse:
        """A ``chat.completion`` object, or its chunks as server-sent events."""
        if exchange.chat.stream:
            return await self._stream(exchange)
        return await exchange.send_whole(
            {
                **self._envelope(exchange, "chat.completion"),
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": exchange.completion.text,
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": self._finish_reason(exchange),
                    }
                ],
                "usage": self._usage(exchange),
            }
        )

    async def _stream(self, exchange: Exchange) -> web.StreamResponse:
        response = await exchange.open_stream("text/event-stream; charset=utf-8")
        # With include_usage every chunk carries "usage": null until the last one.
        extra: dict[str, Any] = {"usage": None} if exchange.chat.include_usage else {}

        async def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            event = {**self._envelope(exchange, "chat.completion.chunk"), "choices": [choice]}
            await response.write(b"data: " + dumps({**event, **extra}) + b"\n\n")

        await chunk({"role": "assistant", "content": "", "refusal": None})
        async for token in exchange.tokens():
            await chunk({"content": token})
        await chunk({}, self._finish_reason(exchange))
        if exchange.chat.include_usage:
            usage = {
                **self._envelope(exchange, "chat.completion.chunk"),
                "choices": [],
                "usage": self._usage(exchange),
            }
            await response.write(b"data: " + dumps(usage) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    def _envelope(exchange: Exchange, kind: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-mock{exchange.sequence:08d}",
            "object": kind,
            "created": exchange.created,
            "model": exchange.chat.model,
            "system_fingerprint": FINGERPRINT,
        }

    @staticmethod
    def _finish_reason(exchange: Exchange) -> str:
        return "length" if exchange.completion.truncated else "stop"

    @staticmethod
    def _usage(exchange: Exchange) -> dict[str, int]:
        return {
            "prompt_tokens": exchange.prompt_tokens,
            "completion_tokens": exchange.completion_tokens,
            "total_tokens": exchange.prompt_tokens + exchange.completion_tokens,
        }


def models_list(models: tuple[str, ...], created: int) -> dict[str, Any]:
    """The body of OpenAI's ``GET /v1/models``."""
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "conveyor-mock"}
            for m in models
        ],
    }
