"""The mock LLM over real sockets: the official SDKs unchanged, and every fault it injects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from conveyor.mock_llm import (
    BackgroundMockLLM,
    MockConfig,
    MockLLM,
    count_prompt_tokens,
    count_tokens,
    derived_reply,
)
from conveyor.mock_llm.faults import RequestRateLimiter
from conveyor.mock_llm.tokens import tokenize

ROOT = Path(__file__).resolve().parents[2]
OPENAI_BODY: dict[str, Any] = {
    "model": "mock-gpt",
    "messages": [{"role": "user", "content": "write a slogan for shoes"}],
}
ANTHROPIC_BODY: dict[str, Any] = {**OPENAI_BODY, "max_tokens": 64}
# Each API's chat endpoint and a valid non-streaming body.
APIS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("/v1/chat/completions", OPENAI_BODY),
    "anthropic": ("/v1/messages", ANTHROPIC_BODY),
    "ollama": ("/api/chat", {**OPENAI_BODY, "stream": False}),
}


def error_message(api: str, body: dict[str, Any]) -> str:
    """The error message of ``body`` in the shape of ``api``."""
    if api == "ollama":
        return str(body["error"])
    return str(body["error"]["message"])


@pytest.fixture
async def mock() -> AsyncIterator[MockLLM]:
    async with MockLLM() as server:
        yield server


@pytest.fixture
async def http(mock: MockLLM) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mock.url, timeout=10) as client:
        yield client


@pytest.fixture
async def openai_client(mock: MockLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=mock.url + "/v1", api_key="test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def anthropic_client(mock: MockLLM) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=mock.url, api_key="test", max_retries=0) as client:
        yield client


async def stats(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/mock/stats")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


# --- OpenAI Chat Completions ----------------------------------------------------------------


async def test_openai_sdk_reads_a_completion_with_usage(
    mock: MockLLM, openai_client: openai.AsyncOpenAI
) -> None:
    messages: Any = [
        {"role": "system", "content": "You are a copywriter."},
        {"role": "user", "content": "write a slogan for shoes"},
    ]
    first = await openai_client.chat.completions.create(model="mock-gpt", messages=messages)
    again = await openai_client.chat.completions.create(model="mock-gpt", messages=messages)

    [choice] = first.choices
    assert choice.message.content == derived_reply("write a slogan for shoes", 16)
    assert again.choices[0].message.content == choice.message.content  # deterministic
    assert choice.finish_reason == "stop" and first.model == "mock-gpt"
    assert first.usage is not None
    assert first.usage.prompt_tokens == count_prompt_tokens(
        ["You are a copywriter.", "write a slogan for shoes"]
    )
    assert first.usage.completion_tokens == 16
    assert first.usage.total_tokens == first.usage.prompt_tokens + 16
    assert mock.stats.completion_tokens == 32


async def test_openai_max_completion_tokens_cuts_the_reply(
    mock: MockLLM, openai_client: openai.AsyncOpenAI
) -> None:
    mock.configure(response_text="one two three four five six seven")
    cut = await openai_client.chat.completions.create(**OPENAI_BODY, max_completion_tokens=3)
    assert cut.choices[0].message.content == "one two three"
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 3


async def test_openai_sdk_streams_chunks_and_a_final_usage_chunk(
    openai_client: openai.AsyncOpenAI,
) -> None:
    whole = await openai_client.chat.completions.create(**OPENAI_BODY)
    stream = await openai_client.chat.completions.create(
        **OPENAI_BODY, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == count_tokens(text) == 16
    assert all(c.usage is None for c in chunks[:-1])


async def test_openai_stream_without_include_usage_sends_no_usage(
    http: httpx.AsyncClient,
) -> None:
    async with http.stream(
        "POST", "/v1/chat/completions", json={**OPENAI_BODY, "stream": True}
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    events = [json.loads(d) for d in data[:-1]]
    assert all("usage" not in e and e["object"] == "chat.completion.chunk" for e in events)


async def test_openai_sdk_lists_the_models(openai_client: openai.AsyncOpenAI) -> None:
    page = await openai_client.models.list()
    assert [m.id for m in page.data] == ["mock-gpt", "mock-claude", "mock-llama"]


# --- Anthropic Messages ---------------------------------------------------------------------


async def test_anthropic_sdk_reads_a_message_with_usage(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    message = await anthropic_client.messages.create(
        model="mock-claude",
        max_tokens=64,
        system="You are a copywriter.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "a slogan for shoes"}]}],
    )
    [block] = message.content
    assert block.type == "text" and block.text == derived_reply("a slogan for shoes", 16)
    assert message.stop_reason == "end_turn" and message.model == "mock-claude"
    assert message.usage.input_tokens == count_prompt_tokens(
        ["You are a copywriter.", "a slogan for shoes"]
    )
    assert message.usage.output_tokens == 16

    cut = await anthropic_client.messages.create(**{**ANTHROPIC_BODY, "max_tokens": 2})
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2


async def test_anthropic_sdk_streams_text_and_the_final_usage(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    whole = await anthropic_client.messages.create(**ANTHROPIC_BODY)
    async with anthropic_client.messages.stream(**ANTHROPIC_BODY) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert whole.content[0].type == "text" and text == whole.content[0].text
    assert final.usage.output_tokens == 16 and final.stop_reason == "end_turn"
    assert final.usage.input_tokens == whole.usage.input_tokens


async def test_anthropic_stream_sends_the_documented_event_sequence(
    mock: MockLLM, http: httpx.AsyncClient
) -> None:
    mock.configure(response_text="fast shoes win")
    body = {**ANTHROPIC_BODY, "stream": True}
    async with http.stream("POST", "/v1/messages", json=body) as response:
        lines = [line async for line in response.aiter_lines()]
    names = [line[7:] for line in lines if line.startswith("event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in data] == names
    assert data[-2]["usage"] == {"output_tokens": 3}
    assert data[-2]["delta"]["stop_reason"] == "end_turn"


async def test_anthropic_requires_max_tokens(http: httpx.AsyncClient) -> None:
    # The SDK refuses this before sending; the server must refuse it too, as the real API does.
    response = await http.post("/v1/messages", json=OPENAI_BODY)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


async def test_anthropic_sdk_lists_the_models(anthropic_client: anthropic.AsyncAnthropic) -> None:
    page = await anthropic_client.models.list()
    assert [m.id for m in page.data] == ["mock-gpt", "mock-claude", "mock-llama"]


# --- Ollama ---------------------------------------------------------------------------------


async def test_ollama_streams_ndjson_by_default(http: httpx.AsyncClient) -> None:
    body = {**OPENAI_BODY, "options": {"num_predict": 5}}
    async with http.stream("POST", "/api/chat", json=body) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) async for line in response.aiter_lines() if line]
    *tokens, last = lines
    assert len(tokens) == 5 and not any(t["done"] for t in tokens)
    assert last["done"] is True and last["done_reason"] == "length"
    assert last["eval_count"] == 5
    assert last["prompt_eval_count"] == count_prompt_tokens(["write a slogan for shoes"])
    text = "".join(t["message"]["content"] for t in tokens)
    assert text == " ".join(derived_reply("write a slogan for shoes", 16).split()[:5])


async def test_ollama_answers_one_object_when_not_streaming(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/chat", json={**OPENAI_BODY, "stream": False})
    body = response.json()
    assert response.status_code == 200 and body["done"] is True
    assert body["message"] == {
        "role": "assistant",
        "content": derived_reply("write a slogan for shoes", 16),
    }
    assert body["done_reason"] == "stop" and body["eval_count"] == 16
    tags = (await http.get("/api/tags")).json()
    assert [m["name"] for m in tags["models"]] == ["mock-gpt", "mock-claude", "mock-llama"]


# --- injected faults ------------------------------------------------------------------------


async def test_injected_429_carries_retry_after(
    mock: MockLLM, openai_client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    mock.configure(script=["429"], retry_after=7)
    with pytest.raises(openai.RateLimitError) as caught:
        await openai_client.chat.completions.create(**OPENAI_BODY)
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers["retry-after-ms"] == "7000"
    assert caught.value.code == "rate_limit_exceeded"
    counted = await stats(http)
    assert counted["injected"] == {"429": 1} and counted["limit_429s"] == 0
    assert counted["by_status"] == {"429": 1}


@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
async def test_injected_server_errors_in_each_api_shape(
    http: httpx.AsyncClient, status: int
) -> None:
    for api, (path, body) in APIS.items():
        response = await http.post(path, json=body, headers={"x-mock-fault": str(status)})
        assert response.status_code == status, api
        assert f"injected {status}" in error_message(api, response.json())
        assert "retry-after" not in response.headers
    counted = await stats(http)
    assert counted["by_status"] == {str(status): 3}
    assert counted["injected"] == {str(status): 3}


async def test_reset_aborts_the_connection_without_a_response(
    mock: MockLLM, openai_client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    mock.configure(script=["reset", "reset"])
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await http.post("/v1/chat/completions", json=OPENAI_BODY)
    with pytest.raises(openai.APIConnectionError):
        await openai_client.chat.completions.create(**OPENAI_BODY)
    counted = await stats(http)
    assert counted["injected"] == {"reset": 2}
    assert counted["by_status"] == {}  # no status line ever went out


async def test_reset_is_a_tcp_rst_not_a_clean_close(mock: MockLLM) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(mock.url.rsplit(":", 1)[1]))
    body = json.dumps(OPENAI_BODY).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: mock\r\nx-mock-fault: reset\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    try:
        # A graceful close would read b"" here; SO_LINGER 0 makes the kernel send RST.
        with pytest.raises(ConnectionResetError):
            await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_stalled_stream_goes_silent_until_the_read_timeout(
    mock: MockLLM, http: httpx.AsyncClient
) -> None:
    mock.configure(script=["stall"], stall_after_tokens=3)
    received: list[str] = []
    timeout = httpx.Timeout(10, read=0.5)
    body = {**OPENAI_BODY, "stream": True}
    with pytest.raises(httpx.ReadTimeout):
        async with http.stream("POST", "/v1/chat/completions", json=body, timeout=timeout) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    received.append(line)
    deltas = [json.loads(line[6:])["choices"][0]["delta"] for line in received]
    assert deltas[0]["role"] == "assistant"  # the opening chunk, then three tokens
    assert [d["content"] for d in deltas[1:]] == ["Mock", " reply:", " write"]
    assert (await stats(http))["injected"] == {"stall": 1}


async def test_a_timed_stall_resumes_and_finishes_the_stream(
    mock: MockLLM, http: httpx.AsyncClient
) -> None:
    mock.configure(script=["stall"], stall_after_tokens=1, stall_seconds=0.3)
    body = {**ANTHROPIC_BODY, "stream": True}
    started = time.monotonic()
    async with http.stream("POST", "/v1/messages", json=body) as response:
        names = [line[7:] async for line in response.aiter_lines() if line.startswith("event: ")]
    assert time.monotonic() - started >= 0.3
    assert names.count("content_block_delta") == 16 and names[-1] == "message_stop"


async def test_a_stalled_whole_reply_sends_headers_but_no_body(
    mock: MockLLM, http: httpx.AsyncClient
) -> None:
    mock.configure(script=["stall"])
    timeout = httpx.Timeout(10, read=0.5)
    async with http.stream("POST", "/api/chat", json=APIS["ollama"][1], timeout=timeout) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            await r.aread()


async def test_a_slow_start_delays_the_first_byte(mock: MockLLM, http: httpx.AsyncClient) -> None:
    mock.configure(slow_start_seconds=0.5)
    fault = {"x-mock-fault": "slow_start"}
    with pytest.raises(httpx.ReadTimeout):  # a client whose first-byte limit is shorter
        await http.post("/v1/messages", json=ANTHROPIC_BODY, headers=fault, timeout=0.2)

    started = time.monotonic()
    body = {**OPENAI_BODY, "stream": True}
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=fault) as r:
        first_byte = time.monotonic() - started
        assert r.status_code == 200
        data = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert first_byte >= 0.5
    assert data[-1] == "data: [DONE]"
    assert (await stats(http))["injected"] == {"slow_start": 2}


async def test_the_rate_limit_answers_429_and_counts_apart_from_injected_ones(
    mock: MockLLM, http: httpx.AsyncClient
) -> None:
    mock.configure(rate_limit_rpm=3, script=["429"])
    responses = [await http.post("/v1/chat/completions", json=OPENAI_BODY) for _ in range(5)]

    assert [r.status_code for r in responses] == [429, 200, 200, 429, 429]
    assert responses[0].headers["retry-after"] == "1"  # injected: the configured 1 s
    for limited in responses[3:]:
        assert 1 <= int(limited.headers["retry-after"]) <= 60  # the window's real wait
        assert "3 requests per minute" in limited.json()["error"]["message"]
        assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert responses[1].headers["x-ratelimit-limit-requests"] == "3"
    counted = await stats(http)
    assert counted["limit_429s"] == 2 and counted["injected"] == {"429": 1}
    assert counted["by_status"] == {"429": 3, "200": 2}
    assert counted["requests_total"] == 5


async def test_a_new_rate_limit_window_starts_empty(mock: MockLLM, http: httpx.AsyncClient) -> None:
    mock.configure(rate_limit_rpm=2)
    statuses = [(await http.post("/v1/chat/completions", json=OPENAI_BODY)).status_code]
    statuses += [(await http.post("/v1/chat/completions", json=OPENAI_BODY)).status_code]
    statuses += [(await http.post("/v1/chat/completions", json=OPENAI_BODY)).status_code]
    mock.configure(rate_limit_window=30.0)  # the same limit over another window: a fresh one
    statuses += [(await http.post("/v1/chat/completions", json=OPENAI_BODY)).status_code]
    assert statuses == [200, 200, 429, 200]


async def test_the_script_is_consumed_in_order_then_requests_succeed(
    mock: MockLLM, http: httpx.AsyncClient
) -> None:
    mock.configure(script=["429", "ok", "503", "reset", "500"])
    path, body = APIS["ollama"]
    statuses: list[int | str] = []
    for _ in range(7):
        try:
            statuses.append((await http.post(path, json=body)).status_code)
        except httpx.TransportError:
            statuses.append("reset")
        if len(statuses) == 2:
            # A per-request override is extra: it does not use up the script.
            forced = await http.post(path, json=body, headers={"x-mock-fault": "502"})
            assert forced.status_code == 502
            assert (await stats(http))["script_remaining"] == ["503", "reset", "500"]
    assert statuses == [429, 200, 503, "reset", 500, 200, 200]
    counted = await stats(http)
    assert counted["injected"] == {"429": 1, "502": 1, "503": 1, "reset": 1, "500": 1}
    assert counted["script_remaining"] == []


async def test_fault_rates_are_drawn_from_a_seeded_rng(
    mock: MockLLM, http: httpx.AsyncClient
) -> None:
    mock.configure(fault_rates={"500": 0.5}, seed=7)

    async def run() -> list[int]:
        return [
            (await http.post("/v1/messages", json=ANTHROPIC_BODY)).status_code for _ in range(30)
        ]

    first = await run()
    assert set(first) == {200, 500}
    assert (await stats(http))["injected"] == {"500": first.count(500)}
    assert (await http.post("/mock/reset")).status_code == 200
    assert await run() == first  # same seed, same order: the same faults


async def test_mock_config_changes_a_live_server_and_rejects_bad_fields(
    http: httpx.AsyncClient,
) -> None:
    changed = await http.post("/mock/config", json={"fault_rates": {"503": 1.0}})
    assert changed.status_code == 200 and changed.json()["fault_rates"] == {"503": 1.0}
    assert (await http.post("/v1/chat/completions", json=OPENAI_BODY)).status_code == 503

    too_likely = await http.post("/mock/config", json={"fault_rates": {"503": 0.8, "429": 0.5}})
    assert too_likely.status_code == 400 and "sum to 1.3" in too_likely.json()["error"]
    typo = await http.post("/mock/config", json={"fault_rate": {"503": 1.0}})
    assert typo.status_code == 400 and "fault_rate" in typo.json()["error"]
    unknown = await http.post("/mock/config", json={"script": ["418"]})
    assert unknown.status_code == 400 and "script" in unknown.json()["error"]

    config = (await http.get("/mock/config")).json()
    assert config["fault_rates"] == {"503": 1.0}  # a rejected change leaves it as it was
    await http.post("/mock/config", json={"fault_rates": {}})
    assert (await http.post("/v1/chat/completions", json=OPENAI_BODY)).status_code == 200


async def test_bad_requests_get_400_in_the_api_shape(http: httpx.AsyncClient) -> None:
    not_json = await http.post("/v1/chat/completions", content=b"{nope")
    assert not_json.status_code == 400
    assert not_json.json()["error"]["type"] == "invalid_request_error"
    no_messages = await http.post("/api/chat", json={"model": "mock-llama"})
    assert no_messages.status_code == 400 and "messages" in no_messages.json()["error"]
    bad_fault = await http.post(
        "/v1/messages", json=ANTHROPIC_BODY, headers={"x-mock-fault": "teapot"}
    )
    assert bad_fault.status_code == 400 and "unknown fault" in bad_fault.text


async def test_stats_count_requests_in_flight(mock: MockLLM, http: httpx.AsyncClient) -> None:
    mock.configure(script=["stall"] * 4, stall_after_tokens=0)
    body = {**OPENAI_BODY, "stream": True}

    async def stalled() -> None:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            async for _ in response.aiter_bytes():
                pass

    clients = [asyncio.create_task(stalled()) for _ in range(4)]
    while mock.stats.in_flight < 4:
        await asyncio.sleep(0.01)
    for client in clients:
        client.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    while mock.stats.in_flight:  # the hang-ups cancel the stalled handlers
        await asyncio.sleep(0.01)
    assert mock.stats.max_in_flight == 4 and mock.stats.by_status == {"200": 4}


# --- other ways to run it -------------------------------------------------------------------


def test_background_mock_serves_synchronous_clients() -> None:
    with (
        BackgroundMockLLM(MockConfig(script=("503",))) as mock,
        httpx.Client(base_url=mock.url) as client,
    ):
        path, body = APIS["openai"]
        assert client.post(path, json=body).status_code == 503
        assert client.post(path, json=body).json()["choices"][0]["finish_reason"] == "stop"
        mock.configure(response_text="done")
        assert client.post(path, json=body).json()["choices"][0]["message"]["content"] == "done"
        assert mock.stats().by_status == {"503": 1, "200": 2}


def test_the_command_serves_with_its_flags_until_sigterm() -> None:
    command = [sys.executable, "-m", "conveyor.mock_llm", "--port", "0"]
    flags = ["--script", "429,ok", "--retry-after", "2s", "--response-text", "hello there"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [*command, *flags], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().split()[4]
            with httpx.Client(base_url=url) as client:
                limited = client.post("/v1/messages", json=ANTHROPIC_BODY)
                assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
                ok = client.post("/v1/messages", json=ANTHROPIC_BODY).json()
                assert ok["content"] == [{"type": "text", "text": "hello there"}]
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0


def test_the_command_rejects_a_bad_flag_by_name() -> None:
    command = [sys.executable, "-m", "conveyor.mock_llm", "--error-rate", "429=lots"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert done.returncode == 2
    assert "--error-rate" in done.stderr and "429=lots" in done.stderr


# --- the pure pieces ------------------------------------------------------------------------


def test_the_rate_limit_window_slides() -> None:
    now = [0.0]
    limiter = RequestRateLimiter(2, clock=lambda: now[0])
    assert limiter.admit() is None
    now[0] = 30.0
    assert limiter.admit() is None
    assert limiter.admit() == pytest.approx(30.0)  # the first admission leaves at t=60
    now[0] = 60.0
    assert limiter.admit() is None and limiter.remaining() == 0
    assert limiter.admit() == pytest.approx(30.0)  # now the t=30 one is the oldest


@pytest.mark.parametrize(
    "text", ["", "   ", "one", "  lead and trail  ", "a\nb\tc", "supercalifragilistic word"]
)
def test_tokens_join_back_to_the_text(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == text and count_tokens(text) == len(tokens)
    assert all(len(t.strip()) <= 8 for t in tokens)
