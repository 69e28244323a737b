"""Circuit breakers as the workers export them, read back from their ``/metrics``.

A breaker lives in one worker's memory (``gateway/breakers.py``): each worker judges each
(provider, model) from its own calls, and nothing persists it. ``conveyor status --watch``
shows them by scraping the workers it is pointed at (``--metrics-url``), the same numbers
Prometheus sees; this module only parses what it fetched (prometheus_client stays here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["BREAKER_STATES", "BreakerView", "merge_breakers", "read_breakers"]

BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}
"""The names of ``conveyor_llm_breaker_state``'s values (``gateway_metrics.py``)."""


@dataclass(slots=True)
class BreakerView:
    """One (provider, model) over the workers read: its worst state, and where it is open."""

    provider: str
    model: str
    worst: int = 0
    open_in: list[str] = field(default_factory=list)
    """The sources (metrics URLs) whose breaker is open."""

    @property
    def state(self) -> str:
        """``closed``, ``half-open`` or ``open``: the worst state any worker reports."""
        return BREAKER_STATES.get(self.worst, str(self.worst))


def read_breakers(text: str) -> dict[tuple[str, str], int]:
    """The breaker states of one scrape (Prometheus text format), by (provider, model)."""
    found: dict[tuple[str, str], int] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "conveyor_llm_breaker_state":
            continue
        for sample in family.samples:
            key = (sample.labels.get("provider", ""), sample.labels.get("model", ""))
            found[key] = int(sample.value)
    return found


def merge_breakers(scrapes: dict[str, dict[tuple[str, str], int]]) -> list[BreakerView]:
    """One view per (provider, model) over the scrapes of several workers, sorted."""
    views: dict[tuple[str, str], BreakerView] = {}
    for source, states in scrapes.items():
        for (provider, model), state in states.items():
            view = views.setdefault((provider, model), BreakerView(provider, model))
            view.worst = max(view.worst, state)
            if state == 2:
                view.open_in.append(source)
    return [views[key] for key in sorted(views)]
