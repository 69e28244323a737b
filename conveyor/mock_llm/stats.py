"""Counters of what the mock did, so a test can check what its client really saw."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from conveyor.mock_llm.config import Fault

TRACEPARENTS_KEPT = 1000
"""How many ``traceparent`` headers the stats keep (the newest)."""


@dataclass
class MockStats:
    """Counts since start (or the last reset) of the chat endpoints; /mock/* is not counted.

    ``by_status`` counts responses whose status line went out, so a reset connection has none.
    A 429 is either the server's own rate limit (``limit_429s``) or injected
    (``injected["429"]``); ``by_status["429"]`` is their sum.
    """

    requests_total: int = 0
    by_api: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    limit_429s: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    traceparents: list[str] = field(default_factory=list)
    """The W3C ``traceparent`` headers of the chat requests that sent one, oldest first
    (the last ``TRACEPARENTS_KEPT``): what a traced client passed on."""

    def request_started(self, api: str, traceparent: str | None = None) -> None:
        """Count one chat request of ``api`` (openai, anthropic, ollama) as arrived."""
        if traceparent:
            self.traceparents.append(traceparent)
            del self.traceparents[:-TRACEPARENTS_KEPT]
        self.requests_total += 1
        self.by_api[api] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def request_ended(self) -> None:
        """The handler of one request returned, failed or was cancelled."""
        self.in_flight -= 1

    def status_sent(self, status: int) -> None:
        """A status line went out."""
        self.by_status[str(status)] += 1

    def fault_injected(self, fault: Fault) -> None:
        """A fault other than ``ok`` was chosen for a request."""
        self.injected[fault.value] += 1

    def tokens_served(self, prompt: int, completion: int) -> None:
        """A reply was generated with this usage."""
        self.prompt_tokens += prompt
        self.completion_tokens += completion

    def copy(self) -> MockStats:
        """A snapshot that later requests do not change."""
        return MockStats(
            requests_total=self.requests_total,
            by_api=Counter(self.by_api),
            by_status=Counter(self.by_status),
            limit_429s=self.limit_429s,
            injected=Counter(self.injected),
            in_flight=self.in_flight,
            max_in_flight=self.max_in_flight,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            traceparents=list(self.traceparents),
        )

    def as_json(self) -> dict[str, Any]:
        """The JSON body of ``GET /mock/stats``."""
        return {
            "requests_total": self.requests_total,
            "by_api": dict(self.by_api),
            "by_status": dict(self.by_status),
            "limit_429s": self.limit_429s,
            "injected": dict(self.injected),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "traceparents": list(self.traceparents),
        }
