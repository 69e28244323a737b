"""The seam where call accounting plugs in: one ``CallRecord`` per attempt.

The gateway hands its ``CallRecorder`` a record of every attempt (failed ones, fallbacks,
fail-fast skips of an open breaker, budget refusals and cache hits included).
``call_log.CallLog`` writes them to ``llm_calls`` in batches, priced from the price
table; the default here, ``CallCounters``, keeps in-process counters only: enough for a
test or a process's own use, lost when the process ends.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from conveyor.core.llm_errors import FailureKind


class CallOutcome(StrEnum):
    """How one attempt ended; the failure kinds carry the values of ``FailureKind``."""

    OK = "ok"
    PERMANENT = FailureKind.PERMANENT.value
    RATE_LIMITED = FailureKind.RATE_LIMITED.value
    SERVER_ERROR = FailureKind.SERVER_ERROR.value
    TRANSPORT = FailureKind.TRANSPORT.value
    TIMEOUT = FailureKind.TIMEOUT.value
    CIRCUIT_OPEN = "circuit_open"  # failed fast: nothing was sent
    BUDGET_REFUSED = "budget_refused"  # the budget said no: nothing was sent
    ABANDONED = "abandoned"  # cancelled, or the caller stopped reading a stream
    CACHED = "cached"  # answered from the response cache: nothing was sent

    @classmethod
    def of(cls, kind: FailureKind) -> CallOutcome:
        """The outcome of an attempt that failed with ``kind``."""
        return cls(kind.value)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One attempt at one target, as accounting sees it.

    ``requested`` is the alias or model the caller asked for; ``provider`` and ``model``
    the target tried. ``attempt`` is 1-based per target. Tokens are the provider's counts
    when it reported them, else the gateway's estimate (``usage_estimated``); a failed
    attempt without a reply has 0. Times are seconds; ``ttft`` is None without a token;
    ``at`` is when the record was made.
    """

    tenant_id: str | None
    task_id: int | None
    group_id: str | None
    requested: str
    provider: str
    model: str
    attempt: int
    outcome: CallOutcome
    stream: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    latency: float = 0.0
    ttft: float | None = None
    status: int | None = None
    error: str | None = None
    finish_reason: str | None = None
    """Why the reply ended (``stop``, ``length``, ...); None without a whole reply."""
    response_model: str | None = None
    """The model the provider says answered, when it said (tracing reports it)."""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        """The record as JSON data (how an isolated child hands its records to the worker)."""
        data = dataclasses.asdict(self)
        data["outcome"] = self.outcome.value
        data["at"] = self.at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CallRecord:
        """The record ``to_json`` gave."""
        fields = dict(data)
        fields["outcome"] = CallOutcome(fields["outcome"])
        fields["at"] = datetime.fromisoformat(fields["at"])
        return cls(**fields)


class CallRecorder(Protocol):
    """Receives a record of every attempt."""

    async def record(self, record: CallRecord) -> None:
        """Keep ``record``. Called on the call's path: be quick (batch writes).

        An exception here is logged and swallowed; it never fails the call.
        """
        ...


class CallCounters:
    """The in-process default: counts attempts and tokens per (provider, model)."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str, CallOutcome]] = Counter()
        self.prompt_tokens: Counter[tuple[str, str]] = Counter()
        self.completion_tokens: Counter[tuple[str, str]] = Counter()
        self.last: CallRecord | None = None

    async def record(self, record: CallRecord) -> None:
        """Add ``record`` to the counters."""
        target = (record.provider, record.model)
        self.outcomes[(*target, record.outcome)] += 1
        self.prompt_tokens[target] += record.prompt_tokens
        self.completion_tokens[target] += record.completion_tokens
        self.last = record

    def count(
        self,
        outcome: CallOutcome | None = None,
        provider: str | None = None,
        model: str | None = None,
    ) -> int:
        """Attempts recorded, narrowed to an outcome, a provider and a model if given."""
        return sum(
            n
            for (p, m, o), n in self.outcomes.items()
            if (outcome is None or o is outcome)
            and (provider is None or p == provider)
            and (model is None or m == model)
        )
