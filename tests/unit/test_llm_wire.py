"""Provider wire formats without a network: bodies, replies, and stream framing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.errors import LLMPermanentError
from conveyor.gateway.chat import ChatRequest, checked_messages
from conveyor.gateway.providers import AnthropicMessages, OllamaChat, OpenAIChat, Piece
from conveyor.gateway.providers.base import BadReply
from conveyor.gateway.providers.sse import SSEEvent, split_lines, sse_events

MESSAGES = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"})


def request(stream: bool = False) -> ChatRequest:
    return ChatRequest("m", MESSAGES, max_tokens=7, temperature=0.2, stream=stream)


async def _aiter(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def _collect(source: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in source]


def run(source: AsyncIterator[Any]) -> list[Any]:
    return asyncio.run(_collect(source))


def pieces(wire: Any, lines: list[str]) -> list[Piece]:
    return run(wire.parse_stream(_aiter(lines)))


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


# Text a provider can send: any character but line breaks and lone surrogates (which
# have no UTF-8 encoding, so no wire can carry them).
line_text = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12
)


@given(
    st.data(), st.lists(line_text, min_size=1, max_size=6), st.sampled_from(["\n", "\r\n", "\r"])
)
def test_lines_survive_any_chunking(data: st.DataObject, lines: list[str], ending: str) -> None:
    body = "".join(line + ending for line in lines).encode()
    assert run(split_lines(_aiter(data.draw(chunked(body))))) == lines


def test_lines_do_not_break_at_unicode_separators() -> None:
    assert run(split_lines(_aiter(["a\u2028b\x85c\nd".encode()]))) == ["a\u2028b\x85c", "d"]


def test_sse_events_join_data_and_skip_comments() -> None:
    lines = [": keep-alive", "event: ping", "data: {}", "", "data: a", "data: b", "id: 3", ""]
    assert run(sse_events(_aiter(lines))) == [SSEEvent("ping", "{}"), SSEEvent("message", "a\nb")]


def test_openai_body_and_stream() -> None:
    body = OpenAIChat().body(request(stream=True))
    assert body["max_tokens"] == 7 and body["stream_options"] == {"include_usage": True}
    assert OpenAIChat("max_completion_tokens").body(request())["max_completion_tokens"] == 7
    assert OpenAIChat().headers("k") == {"Authorization": "Bearer k"}
    chunk = {"choices": [{"delta": {"content": "Hel"}, "finish_reason": None}]}
    done = {"choices": [{"delta": {}, "finish_reason": "length"}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}
    lines = [f"data: {json.dumps(c)}" for c in (chunk, done, usage)]
    got = pieces(OpenAIChat(), [x for line in lines for x in (line, "")] + ["data: [DONE]", ""])
    assert got == [
        Piece(text="Hel"),
        Piece(finish_reason="length"),
        Piece(prompt_tokens=9, completion_tokens=2),
    ]


def test_anthropic_moves_system_out_and_maps_stop_reasons() -> None:
    body = AnthropicMessages().body(request())
    assert body["system"] == "be brief" and body["messages"] == [{"role": "user", "content": "hi"}]
    reply = AnthropicMessages().parse_reply(
        {
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 2},
        }
    )
    assert (reply.text, reply.finish_reason, reply.prompt_tokens) == ("ok", "length", 7)
    with pytest.raises(BadReply, match="overloaded_error"):
        pieces(
            AnthropicMessages(),
            ['data: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}', ""],
        )


def test_ollama_options_and_final_line() -> None:
    body = OllamaChat().body(request())
    assert body["options"] == {"num_predict": 7, "temperature": 0.2} and body["stream"] is False
    lines = [
        json.dumps({"message": {"content": "yo"}, "done": False}),
        json.dumps(
            {
                "message": {"content": ""},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 4,
                "eval_count": 1,
            }
        ),
    ]
    assert pieces(OllamaChat(), lines) == [
        Piece(text="yo"),
        Piece(finish_reason="stop", prompt_tokens=4, completion_tokens=1),
    ]
    with pytest.raises(BadReply):
        pieces(OllamaChat(), ["{not json"])


@pytest.mark.parametrize(
    "messages",
    [[], "hi", [{"role": "robot", "content": "x"}], [{"role": "user", "content": 3}], [1]],
)
def test_malformed_messages_are_the_callers_fault(messages: Any) -> None:
    with pytest.raises(LLMPermanentError):
        checked_messages(messages)


def test_each_wire_format_reads_the_model_that_answered() -> None:
    """What tracing reports as ``gen_ai.response.model``: the provider's own name for it."""
    openai = OpenAIChat().parse_reply(
        {"model": "gpt-4o-2024-08-06", "choices": [{"message": {"content": "a"}}]}
    )
    anthropic = AnthropicMessages().parse_reply(
        {"model": "claude-x-20250101", "content": [{"type": "text", "text": "a"}]}
    )
    ollama = OllamaChat().parse_reply({"model": "llama3:8b", "message": {"content": "a"}})
    assert [openai.model, anthropic.model, ollama.model] == [
        "gpt-4o-2024-08-06",
        "claude-x-20250101",
        "llama3:8b",
    ]
    assert OpenAIChat().parse_reply({"choices": [{"message": {"content": "a"}}]}).model is None
    done = {"model": "gpt-4o-mini-1", "choices": [{"delta": {}, "finish_reason": "stop"}]}
    streamed = pieces(OpenAIChat(), [f"data: {json.dumps(done)}", "", "data: [DONE]", ""])
    assert streamed == [Piece(finish_reason="stop", model="gpt-4o-mini-1")]
    start = {"type": "message_start", "message": {"model": "claude-y", "usage": {}}}
    assert pieces(AnthropicMessages(), [f"data: {json.dumps(start)}", ""])[0].model == "claude-y"
