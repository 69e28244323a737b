"""One call as ``Failover`` walks its chain, and one attempt's debts: breaker, budget, record.

Every attempt ``Failover`` sends took a breaker ticket and a budget reservation and owes one
report to each, plus a ``CallRecord``, however it ends: a reply, an error, a cancellation,
or a stream its caller stopped reading. ``Attempt.settle`` pays all three exactly once; the
budget's share (a database round trip) runs in the background, after the caller has its
answer. Every record also goes to the gateway's hooks (``hooks.py``) once the recorder has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from conveyor.core.breaker import BreakerOutcome, BreakerSettings, Ticket, breaker_outcome
from conveyor.core.llm_errors import FailureKind
from conveyor.gateway.accounting.records import CallOutcome, CallRecord, CallRecorder
from conveyor.gateway.breakers import BreakerRegistry
from conveyor.gateway.budgets.budget import Budget, BudgetAsk, Reservation
from conveyor.gateway.chat import ChatRequest, Message
from conveyor.gateway.hooks import AttemptInfo, HookChain
from conveyor.gateway.model_routes import Target
from conveyor.gateway.scope import CallScope
from conveyor.store.records import TenantLLMPolicy

log = structlog.get_logger("conveyor.gateway")


@dataclass(frozen=True, slots=True)
class AttemptReport:
    """What an attempt reports besides its outcome (see ``CallRecord`` for the fields).

    The defaults are those of an attempt that got no reply: no tokens, no time, no status.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    latency: float = 0.0
    ttft: float | None = None
    status: int | None = None
    error: str | None = None
    finish_reason: str | None = None
    response_model: str | None = None


NO_REPLY = AttemptReport()


@dataclass(frozen=True, slots=True)
class Call:
    """What one ``chat`` or ``stream`` call asked for, resolved to its chain."""

    requested: str
    targets: tuple[Target, ...]
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float | None
    stream: bool
    scope: CallScope
    prompt_estimate: int
    policy: TenantLLMPolicy | None = None

    def ask(self, target: Target) -> BudgetAsk:
        """What an attempt at ``target`` asks of the budget."""
        return BudgetAsk(
            self.scope,
            target.provider,
            target.model,
            self.prompt_estimate,
            self.max_tokens,
            self.policy,
        )

    def request_for(self, target: Target, headers: dict[str, str] | None = None) -> ChatRequest:
        """The request to send to ``target`` (``headers``: what hooks added)."""
        return ChatRequest(
            model=target.model,
            messages=self.messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            stream=self.stream,
            headers=tuple(headers.items()) if headers else (),
        )

    def record(
        self, target: Target, attempt: int, outcome: CallOutcome, report: AttemptReport = NO_REPLY
    ) -> CallRecord:
        """A record of an attempt of this call (see ``CallRecord`` for the fields)."""
        return CallRecord(
            tenant_id=self.scope.tenant_id,
            task_id=self.scope.task_id,
            group_id=self.scope.group_id,
            requested=self.requested,
            provider=target.provider,
            model=target.model,
            attempt=attempt,
            outcome=outcome,
            stream=self.stream,
            prompt_tokens=report.prompt_tokens,
            completion_tokens=report.completion_tokens,
            usage_estimated=report.usage_estimated,
            latency=report.latency,
            ttft=report.ttft,
            status=report.status,
            error=report.error,
            finish_reason=report.finish_reason,
            response_model=report.response_model,
        )


@dataclass(frozen=True, slots=True)
class Services:
    """What every attempt reports to."""

    breakers: BreakerRegistry
    budget: Budget
    recorder: CallRecorder
    hooks: HookChain = field(default_factory=HookChain)
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` off the caller's path (settling a budget); ``drain`` awaits it."""
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def drain(self) -> None:
        """Wait for the background work still running."""
        while self.background:
            await asyncio.gather(*self.background, return_exceptions=True)

    @property
    def breaker_settings(self) -> BreakerSettings:
        """The settings every breaker shares."""
        return self.breakers.settings

    async def record(self, record: CallRecord, attempt: AttemptInfo | None = None) -> None:
        """Hand ``record`` to the recorder, then to the hooks' ``after_attempt``
        (``attempt`` is None for a record of nothing sent); failures are logged, never
        raised."""
        try:
            await self.recorder.record(record)
        except Exception:
            log.exception("llm_call_record_failed", provider=record.provider, model=record.model)
        if self.hooks.after:
            await self.hooks.after_attempt(record, attempt)


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
        self.info = AttemptInfo(call.scope, call.requested, target, number, ordinal, call.stream)
        """What the hooks see of this attempt; ``info.headers`` go out with the request."""

    @property
    def settled(self) -> bool:
        """Whether the breaker, budget and recorder have been told."""
        return self._settled

    async def settle(
        self,
        outcome: CallOutcome,
        report: AttemptReport = NO_REPLY,
        *,
        kind: FailureKind | None = None,
    ) -> None:
        """Report how the attempt ended, once; later calls do nothing.

        ``report`` goes to the recorder, and its tokens to the budget. ``kind`` is the
        failure's kind (None for a success or an abandoned attempt); it decides whether the
        breaker counts a failure.
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
        if self._reservation.holds:
            self.services.later(self._settle_budget(report.prompt_tokens, report.completion_tokens))
        record = self.call.record(self.target, self.number, outcome, report)
        await self.services.record(record, self.info)

    async def _settle_budget(self, prompt_tokens: int, completion_tokens: int) -> None:
        try:
            await self.services.budget.settle(self._reservation, prompt_tokens, completion_tokens)
        except Exception:
            log.exception("llm_budget_settle_failed", provider=self.target.provider)
