"""A mock LLM provider on real sockets: OpenAI, Anthropic and Ollama APIs with injected faults.

Tests start it in their own event loop (``async with MockLLM(config) as mock``) or in a
thread (``BackgroundMockLLM``); ``conveyor mock-llm`` serves it from the command line.
``docs/mock_llm.md`` lists every option, fault and endpoint.
"""

from __future__ import annotations

from conveyor.gateway.mock.background import BackgroundMockLLM
from conveyor.gateway.mock.config import (
    Fault,
    MockConfig,
    build_config,
    parse_fault_rates,
    parse_script,
)
from conveyor.gateway.mock.exchange import FAULT_HEADER
from conveyor.gateway.mock.server import MockLLM, run_mock_llm
from conveyor.gateway.mock.stats import MockStats
from conveyor.gateway.mock.tokens import count_prompt_tokens, count_tokens, derived_reply

__all__ = [
    "FAULT_HEADER",
    "BackgroundMockLLM",
    "Fault",
    "MockConfig",
    "MockLLM",
    "MockStats",
    "build_config",
    "count_prompt_tokens",
    "count_tokens",
    "derived_reply",
    "parse_fault_rates",
    "parse_script",
    "run_mock_llm",
]
