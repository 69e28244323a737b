"""One call as the router walks it, and one attempt's debts: breaker, budget, record.

Every attempt the router sends took a breaker ticket and a budget reservation and owes one
report to each, plus a ``CallRecord``, however it ends: a reply, an error, a cancellation,
or a stream its caller stopped reading. ``Attempt.settle`` pays all three exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from conveyor.core.breaker import BreakerOutcome, BreakerSettings, Ticket, breaker_outcome
from conveyor.core.llm_errors import FailureKind
from conveyor.gateway.breakers import BreakerRegistry
from conveyor.gateway.budget import Budget, Reservation
from conveyor.gateway.chat import ChatRequest, Message
from conveyor.gateway.recording import CallOutcome, CallRecord, CallRecorder
from conveyor.gateway.routing import Target

log = structlog.get_logger("conveyor.gateway")


@dataclass(frozen=True, slots=True)
class Call:
    """What one ``chat`` or ``stream`` call asked for, resolved to its chain."""

    requested: str
    targets: tuple[Target, ...]
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float | None
    stream: bool
    tenant_id: str | None
    task_id: int | None
    prompt_estimate: int

    @property
    def estimated_tokens(self) -> int:
        """What a reservation sets aside: the prompt estimate plus max_tokens."""
        return self.prompt_estimate + self.max_tokens

    def request_for(self, target: Target) -> ChatRequest:
        """The request to send to ``target``."""
        return ChatRequest(
            model=target.model,
            messages=self.messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            stream=self.stream,
        )

    def record(
        self,
        target: Target,
        attempt: int,
        outcome: CallOutcome,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        usage_estimated: bool = False,
        latency: float = 0.0,
        ttft: float | None = None,
        status: int | None = None,
        error: str | None = None,
    ) -> CallRecord:
        """A record of an attempt of this call (see ``CallRecord`` for the fields)."""
        return CallRecord(
            tenant_id=self.tenant_id,
            task_id=self.task_id,
            requested=self.requested,
            provider=target.provider,
            model=target.model,
            attempt=attempt,
            outcome=outcome,
            stream=self.stream,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            usage_estimated=usage_estimated,
            latency=latency,
            ttft=ttft,
            status=status,
            error=error,
        )


@dataclass(frozen=True, slots=True)
class Services:
    """What every attempt reports to."""

    breakers: BreakerRegistry
    budget: Budget
    recorder: CallRecorder

    @property
    def breaker_settings(self) -> BreakerSettings:
        """The settings every breaker shares."""
        return self.breakers.settings

    async def record(self, record: CallRecord) -> None:
        """Hand ``record`` to the recorder; its failure is logged, never raised."""
        try:
            await self.recorder.record(record)
        except Exception:
            log.exception("llm_call_record_failed", provider=record.provider, model=record.model)


class Attempt:
    """One attempt sent (or about to be) to one target."""

    def __init__(
        self,
        services: Services,
        call: Call,
        target: Target,
        number: int,
        ordinal: int,
        ticket: Ticket,
        reservation: Reservation,
    ) -> None:
        self.services = services
        self.call = call
        self.target = target
        self.number = number  # 1-based at this target
        self.ordinal = ordinal  # 1-based across the whole call
        self._ticket = ticket
        self._reservation = reservation
        self._settled = False

    @property
    def settled(self) -> bool:
        """Whether the breaker, budget and recorder have been told."""
        return self._settled

    async def settle(
        self,
        outcome: CallOutcome,
        *,
        kind: FailureKind | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        usage_estimated: bool = False,
        latency: float = 0.0,
        ttft: float | None = None,
        status: int | None = None,
        error: str | None = None,
    ) -> None:
        """Report how the attempt ended, once; later calls do nothing.

        ``kind`` is the failure's kind (None for a success or an abandoned attempt); it
        decides whether the breaker counts a failure.
        """
        if self._settled:
            return
        self._settled = True
        if outcome is CallOutcome.OK:
            counted = BreakerOutcome.SUCCESS
        elif kind is not None:
            counted = breaker_outcome(kind, self.services.breaker_settings)
        else:
            counted = BreakerOutcome.IGNORED
        self.services.breakers.record(
            self.target.provider, self.target.model, self._ticket, counted
        )
        try:
            await self.services.budget.settle(self._reservation, prompt_tokens + completion_tokens)
        except Exception:
            log.exception("llm_budget_settle_failed", provider=self.target.provider)
        await self.services.record(
            self.call.record(
                self.target,
                self.number,
                outcome,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                usage_estimated=usage_estimated,
                latency=latency,
                ttft=ttft,
                status=status,
                error=error,
            )
        )
