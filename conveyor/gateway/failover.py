"""Walk a call's chain: breaker, budget, attempt, classify, then retry, fall back or stop.

For each target in order: an open breaker skips it at once (nothing sent); otherwise the
budget reserves, the hooks' ``before_attempt`` run, the attempt runs, and a failure is classified by
``conveyor.core.llm_errors.decide``: retry the same target after a delay, move on to the
next target, or stop with ``LLMPermanentError`` (the request is at fault: no provider would
take it). When the chain runs out, ``LLMUnavailable`` lists what happened at each target.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from conveyor.core.breaker import BreakerOutcome
from conveyor.core.llm_errors import (
    CallRetryPolicy,
    FailureKind,
    Verdict,
    classify_status,
    decide,
)
from conveyor.errors import (
    BudgetRefused,
    CircuitOpen,
    LLMAttemptError,
    LLMError,
    LLMPermanentError,
    LLMStatusError,
    LLMTimeout,
    LLMUnavailable,
    TargetFailure,
)
from conveyor.gateway.accounting.records import CallOutcome
from conveyor.gateway.attempt import Attempt, AttemptReport, Call, Services

T = TypeVar("T")
log = structlog.get_logger("conveyor.gateway")

RunAttempt = Callable[[Attempt], Awaitable[T]]


@dataclass(slots=True)
class CallClock:
    """Where a call's time went: inside attempts, and in waits it was made to do."""

    sent: float = 0.0
    waited: float = 0.0


def failure_kind(error: LLMAttemptError) -> FailureKind:
    """The kind of an attempt's failure, for retrying and for the breaker."""
    if isinstance(error, LLMStatusError):
        return classify_status(error.status)
    if isinstance(error, LLMTimeout):
        return FailureKind.TIMEOUT
    return FailureKind.TRANSPORT


class Failover:
    """Runs attempts along a chain until one succeeds."""

    def __init__(
        self,
        services: Services,
        retry: CallRetryPolicy,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.services = services
        self.retry = retry
        self._rng = rng or random.Random()
        self._sleep = sleep

    async def first_success(
        self, call: Call, run: RunAttempt[T], clock: CallClock | None = None
    ) -> T:
        """``run(attempt)``'s value for the first attempt that succeeds.

        ``run`` settles its attempt on success; a failure it raises as an
        ``LLMAttemptError`` is settled here. Anything else (a cancellation) settles the
        attempt as abandoned and propagates. ``clock``, if given, adds up the time spent in
        attempts and in deliberate waits.
        """
        clock = clock or CallClock()
        failures: list[TargetFailure] = []
        ordinal = 0
        last: LLMError | None = None
        breakers = self.services.breakers
        for target in call.targets:
            number = 0
            while True:
                ticket = breakers.allow(target.provider, target.model)
                if ticket is None:
                    last = CircuitOpen(
                        target.provider,
                        target.model,
                        breakers.retry_in(target.provider, target.model),
                    )
                    await self.services.record(
                        call.record(
                            target,
                            number + 1,
                            CallOutcome.CIRCUIT_OPEN,
                            AttemptReport(error=str(last)),
                        )
                    )
                    failures.append(TargetFailure(target.provider, target.model, number, last))
                    break
                try:
                    reservation = await self.services.budget.reserve(call.ask(target))
                    clock.waited += reservation.waited
                except BaseException as exc:
                    breakers.record(target.provider, target.model, ticket, BreakerOutcome.IGNORED)
                    if isinstance(exc, BudgetRefused):
                        await self.services.record(
                            call.record(
                                target,
                                number + 1,
                                CallOutcome.BUDGET_REFUSED,
                                AttemptReport(error=str(exc)),
                            )
                        )
                    raise
                number += 1
                ordinal += 1
                attempt = Attempt(self.services, call, target, number, ordinal, ticket, reservation)
                if self.services.hooks.before:
                    await self.services.hooks.before_attempt(attempt.info)
                started = time.perf_counter()
                try:
                    value = await run(attempt)
                    clock.sent += time.perf_counter() - started
                    return value
                except LLMAttemptError as exc:
                    clock.sent += time.perf_counter() - started
                    kind = failure_kind(exc)
                    status = exc.status if isinstance(exc, LLMStatusError) else None
                    await attempt.settle(
                        CallOutcome.of(kind),
                        AttemptReport(status=status, error=str(exc)),
                        kind=kind,
                    )
                    decision = decide(kind, number, self.retry, self._rng.random(), exc.retry_after)
                    log.info(
                        "llm_attempt_failed",
                        provider=target.provider,
                        model=target.model,
                        attempt=number,
                        error=str(exc),
                        verdict=decision.verdict.value,
                        reason=decision.reason,
                    )
                    if decision.verdict is Verdict.FAIL:
                        raise _permanent(exc) from exc
                    last = exc
                    if decision.verdict is Verdict.NEXT_TARGET:
                        failures.append(TargetFailure(target.provider, target.model, number, exc))
                        break
                    remaining = call.scope.remaining()
                    if remaining is not None and decision.delay >= remaining:
                        failures.append(TargetFailure(target.provider, target.model, number, exc))
                        raise LLMUnavailable(
                            call.requested,
                            failures,
                            note=f"the next retry would start in {decision.delay:.1f} s, "
                            f"after the task's deadline ({max(remaining, 0.0):.1f} s left)",
                        ) from exc
                    began = time.perf_counter()
                    await self._sleep(decision.delay)
                    clock.waited += time.perf_counter() - began
                except BaseException:
                    await attempt.settle(CallOutcome.ABANDONED)
                    raise
        raise LLMUnavailable(call.requested, failures) from last


def _permanent(error: LLMAttemptError) -> LLMPermanentError:
    status = error.status if isinstance(error, LLMStatusError) else None
    return LLMPermanentError(
        f"{error}; the request itself was refused, so it is neither retried nor sent to a "
        "fallback: fix the request (or the API key)",
        provider=error.provider,
        model=error.model,
        status=status,
    )
