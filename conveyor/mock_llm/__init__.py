"""A mock LLM provider on real sockets: OpenAI, Anthropic and Ollama APIs with injected faults.

Tests start it in their own event loop (``async with MockLLM(config) as mock``) or in a
thread (``BackgroundMockLLM``); ``conveyor mock-llm`` serves it from the command line.
``docs/mock_llm.md`` lists every option, fault and endpoint.
"""

from __future__ import annotations

from conveyor.mock_llm.background import BackgroundMockLLM
from conveyor.mock_llm.config import (
    Fault,
    MockConfig,
    ReplyRule,
    build_config,
    parse_fault_rates,
    parse_script,
)
from conveyor.mock_llm.exchange import FAULT_HEADER
from conveyor.mock_llm.server import MockLLM, run_mock_llm
from conveyor.mock_llm.stats import MockStats
from conveyor.mock_llm.tokens import count_prompt_tokens, count_tokens, derived_reply

__all__ = [
    "FAULT_HEADER",
    "BackgroundMockLLM",
    "Fault",
    "MockConfig",
    "MockLLM",
    "MockStats",
    "ReplyRule",
    "build_config",
    "count_prompt_tokens",
    "count_tokens",
    "derived_reply",
    "parse_fault_rates",
    "parse_script",
    "run_mock_llm",
]
