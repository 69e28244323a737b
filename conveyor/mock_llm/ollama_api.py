"""Ollama's native chat API: ``POST /api/chat``, NDJSON lines by default, one object if not.

Ollama streams unless the request says ``"stream": false``; every line is a JSON object, the
last one with ``"done": true``, the ``done_reason`` and the counts and durations (in
nanoseconds) Ollama reports.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from conveyor.mock_llm.exchange import ChatRequest, Exchange, InvalidRequest, dumps
from conveyor.mock_llm.fields import last_user_text, parse_messages, parse_model
from conveyor.mock_llm.tokens import text_of


def now_iso() -> str:
    """The current time as Ollama writes ``created_at``."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class OllamaChat:
    """The dialect of ``/api/chat``."""

    api = "ollama"

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        """The request; ``options.num_predict`` caps the reply (0 or less: no cap)."""
        messages = parse_messages(body)
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise InvalidRequest("options must be an object")
        num_predict = options.get("num_predict")
        if num_predict is not None and (
            isinstance(num_predict, bool) or not isinstance(num_predict, int)
        ):
            raise InvalidRequest(f"options.num_predict must be an integer, got {num_predict!r}")
        stream = body.get("stream", True)
        if not isinstance(stream, bool):
            raise InvalidRequest("stream must be true or false")
        return ChatRequest(
            model=parse_model(body),
            message_texts=tuple(text_of(m.get("content")) for m in messages),
            prompt=last_user_text(messages),
            max_tokens=num_predict if num_predict is not None and num_predict > 0 else None,
            stream=stream,
        )

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """Ollama's ``{"error": "..."}``."""
        return {"error": message}

    async def reply(self, exchange: Exchange) -> web.StreamResponse:
        """One JSON object, or NDJSON lines of one token each and a closing summary."""
        if not exchange.chat.stream:
            # Built before the latency is waited out, so it reports that latency as its duration.
            done_at = exchange.started + exchange.whole_latency()
            line = self._line(exchange, exchange.completion.text)
            return await exchange.send_whole({**line, **self._summary(exchange, done_at)})
        response = await exchange.open_stream("application/x-ndjson")
        async for token in exchange.tokens():
            await response.write(dumps({**self._line(exchange, token), "done": False}) + b"\n")
        summary = self._summary(exchange, done_at=time.monotonic())
        await response.write(dumps({**self._line(exchange, ""), **summary}) + b"\n")
        await response.write_eof()
        return response

    @staticmethod
    def _line(exchange: Exchange, content: str) -> dict[str, Any]:
        return {
            "model": exchange.chat.model,
            "created_at": now_iso(),
            "message": {"role": "assistant", "content": content},
        }

    @staticmethod
    def _summary(exchange: Exchange, done_at: float) -> dict[str, Any]:
        total = max(int((done_at - exchange.started) * 1e9), 0)
        prompt_eval = min(int(exchange.config.ttft * 1e9), total)
        return {
            "done": True,
            "done_reason": "length" if exchange.completion.truncated else "stop",
            "total_duration": total,
            "load_duration": 0,
            "prompt_eval_count": exchange.prompt_tokens,
            "prompt_eval_duration": prompt_eval,
            "eval_count": exchange.completion_tokens,
            "eval_duration": total - prompt_eval,
        }


def tags_list(models: tuple[str, ...]) -> dict[str, Any]:
    """The body of Ollama's ``GET /api/tags``: the models it has."""
    return {
        "models": [
            {
                "name": m,
                "model": m,
                "modified_at": now_iso(),
                "size": 0,
                "digest": hashlib.sha256(m.encode()).hexdigest(),
                "details": {"format": "mock", "family": "mock", "parameter_size": "0B"},
            }
            for m in models
        ]
    }
