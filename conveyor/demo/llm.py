"""The demo's model provider: OpenAI when ``OPENAI_API_KEY`` is set, else the mock.

The mock answers in tens of milliseconds (the demo's time is compressed), injects a few
429s and 503s as real providers do, and enforces a request limit of its own; the gateway's
budget is set to the same limit, so the demo shows the provider never refusing a request
for exceeding it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from conveyor.gateway.config import GatewayConfig, load_gateway_config

PROVIDER_RPM = 120_000
"""The mock's own limit (2,000 requests/s), and the demo budget toward it."""


@dataclass
class DemoProvider:
    """What the demo calls, and where the mock's counters are when it is the mock."""

    config: GatewayConfig
    description: str
    mock_url: str | None = None

    def limit_429s(self) -> int | None:
        """429s the mock gave for exceeding its own limit (None for a real provider)."""
        if self.mock_url is None:
            return None
        stats = httpx.get(f"{self.mock_url}/mock/stats", timeout=5).json()
        return int(stats["limit_429s"])


def _config(provider: dict[str, Any], model: str) -> GatewayConfig:
    return load_gateway_config(
        {
            "providers": {"openai": {"kind": "openai", "max_concurrency": 200, **provider}},
            "aliases": {"writer": [f"openai/{model}"]},
            "default_max_tokens": 120,
            "retry": {"max_attempts": 4, "base": 0.02, "cap": 0.2, "max_retry_after": 2},
            "timeouts": {"connect": 2, "ttft": 10, "gap": 10, "total": 30},
            # Injected faults answer at once, before the 20 ms replies: judge on 100 calls.
            "breaker": {"window": 100, "min_calls": 50},
        }
    )


def _start_mock() -> tuple[subprocess.Popen[str], str]:
    """``conveyor mock-llm`` in a process of its own (sharing the demo's interpreter would
    make every request wait for the worker's share of the GIL)."""
    command = [
        sys.executable, "-m", "conveyor.cli", "mock-llm", "--port", "0", "--latency", "20ms",
        "--reply-tokens", "60", "--error-rate", "429=0.02,503=0.01", "--retry-after", "0s",
        "--rate-limit-rpm", str(PROVIDER_RPM), "--seed", "7",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"http://[\w.:]+", line)
    if found is None:
        process.kill()
        raise RuntimeError(f"the mock LLM did not start: {line!r}")
    return process, found.group(0)


@contextmanager
def demo_provider() -> Iterator[DemoProvider]:
    """The provider for the length of the demo."""
    if os.environ.get("OPENAI_API_KEY"):
        config = _config(
            {"base_url": "https://api.openai.com", "api_key_env": "OPENAI_API_KEY"},
            "gpt-4o-mini",
        )
        yield DemoProvider(config, "OpenAI gpt-4o-mini (OPENAI_API_KEY is set)")
        return
    process, url = _start_mock()
    try:
        config = _config(
            {"base_url": url, "api_key": "demo", "requests_per_minute": PROVIDER_RPM},
            "mock-gpt",
        )
        yield DemoProvider(config, f"the mock LLM at {url} (no OPENAI_API_KEY)", url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
