"""The live state of one mock server: its config, fault picker, rate limit and counters."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor.mock_llm.config import MockConfig
from conveyor.mock_llm.faults import FaultPicker, RequestRateLimiter
from conveyor.mock_llm.stats import MockStats


class MockState:
    """Everything a request handler reads or counts, changed at runtime by ``/mock/config``.

    It lives on the server's event loop and is touched only from there, so it needs no lock.
    """

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.stats = MockStats()
        self.picker = FaultPicker(config)
        self.limiter = self._limiter_for(config)
        self._sequence = 0
        # The tasks answering chat requests, so stopping can cut off a stalled one at once.
        self.handlers: set[asyncio.Task[Any]] = set()

    @staticmethod
    def _limiter_for(config: MockConfig) -> RequestRateLimiter | None:
        rpm = config.rate_limit_rpm
        if rpm is None:
            return None
        return RequestRateLimiter(rpm, window=config.rate_limit_window)

    def next_sequence(self) -> int:
        """A number per request, for response ids that are unique and readable."""
        self._sequence += 1
        return self._sequence

    def configure(self, changes: dict[str, Any]) -> MockConfig:
        """Apply ``changes`` to the config; ConfigurationError leaves the old one in place.

        Only what changed is restarted: a new script starts from its first entry, a new rate
        limit starts with an empty window; counters carry on (``reset`` clears them).
        """
        updated = self.config.updated(changes)
        changed = {
            name for name in changes if getattr(updated, name) != getattr(self.config, name)
        } | ({"script"} if "script" in changes else set())
        self.config = updated
        self.picker.reconfigure(updated, changed)
        if changed & {"rate_limit_rpm", "rate_limit_window"}:
            self.limiter = self._limiter_for(updated)
        return updated

    def reset(self) -> None:
        """Back to the state of a fresh start with the current config: counters, script, window.

        Requests still in flight stay counted as in flight, or the gauge would go negative.
        """
        in_flight = self.stats.in_flight
        self.stats = MockStats(in_flight=in_flight, max_in_flight=in_flight)
        self.picker = FaultPicker(self.config)
        self.limiter = self._limiter_for(self.config)

    def rate_limit_headers(self) -> dict[str, str]:
        """OpenAI-style ``x-ratelimit-*-requests`` headers while a rate limit is configured."""
        if self.limiter is None:
            return {}
        return {
            "x-ratelimit-limit-requests": str(self.limiter.per_minute),
            "x-ratelimit-remaining-requests": str(self.limiter.remaining()),
            "x-ratelimit-reset-requests": f"{self.limiter.reset_seconds():.3f}s",
        }

    def as_json(self) -> dict[str, Any]:
        """The body of ``GET /mock/stats``: the counters and what is left of the script."""
        return {
            **self.stats.as_json(),
            "script_remaining": [f.value for f in self.picker.script_remaining],
        }
