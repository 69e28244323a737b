"""The LLM gateway's errors: attempts, breakers, budgets and caps, whole chains."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from conveyor.errors.base import (
    ConveyorError,
    PermanentError,
)


class LLMError(ConveyorError):
    """A call through the LLM gateway failed."""


class LLMAttemptError(LLMError):
    """One attempt at one (provider, model) failed.

    The gateway classifies it (``conveyor.core.llm_errors``) to retry the same target, move
    to the next one, or stop. A stream that already gave the caller text raises it as is:
    what was shown cannot be taken back, so such a stream is not retried.
    """

    def __init__(
        self, provider: str, model: str, message: str, retry_after: float | None = None
    ) -> None:
        self.provider = provider
        self.model = model
        self.retry_after = retry_after
        super().__init__(f"{provider}/{model}: {message}")


class LLMStatusError(LLMAttemptError):
    """The provider answered with an error status; ``retry_after`` is its Retry-After."""

    def __init__(
        self,
        provider: str,
        model: str,
        status: int,
        message: str,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        wait = f" (Retry-After {retry_after:g}s)" if retry_after is not None else ""
        super().__init__(provider, model, f"HTTP {status}: {message}{wait}", retry_after)


class LLMTransportError(LLMAttemptError):
    """No usable reply: the connection failed or broke, or the body did not parse."""


class LLMTimeout(LLMAttemptError):
    """A timeout layer fired; ``layer`` is ``connect``, ``ttft``, ``gap`` or ``total``."""

    _WHAT: ClassVar[dict[str, str]] = {
        "connect": "no connection within {s:g}s",
        "ttft": "no first token within {s:g}s (time-to-first-token limit)",
        "gap": "the reply went silent for {s:g}s (inter-chunk gap limit)",
        "total": "the attempt passed its total deadline of {s:g}s",
    }

    def __init__(self, provider: str, model: str, layer: str, seconds: float) -> None:
        self.layer = layer
        self.seconds = seconds
        what = self._WHAT.get(layer, layer + " timeout after {s:g}s").format(s=seconds)
        super().__init__(provider, model, what)


class CircuitOpen(LLMError):
    """The breaker of (provider, model) is open: the call failed fast and sent nothing."""

    def __init__(self, provider: str, model: str, retry_in: float) -> None:
        self.provider = provider
        self.model = model
        self.retry_in = retry_in
        super().__init__(
            f"{provider}/{model}: circuit open after repeated failures; "
            f"a probe is let through in {retry_in:.1f}s"
        )


class BudgetRefused(LLMError):
    """The tenant's budget toward a provider did not admit the call.

    Raised by a ``Budget`` implementation; never counted against the provider's breaker.
    """

    def __init__(
        self, tenant_id: str | None, provider: str, reason: str, retry_after: float | None = None
    ) -> None:
        self.tenant_id = tenant_id
        self.provider = provider
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(f"tenant {tenant_id!r} may not call {provider!r} now: {reason}")


class SpendLimitExceeded(BudgetRefused, PermanentError):
    """The tenant's monthly token budget or spend limit cannot take this call.

    Also a ``PermanentError``: the task fails for good instead of retrying into the same
    wall (raise the limit, then replay it from the dead-letter queue).
    """


class LLMCapExceeded(BudgetRefused, PermanentError):
    """The call would take its task run or its group past a cap on LLM calls, tokens or
    money (the runaway guard; ``conveyor/core/llm_caps.py``).

    ``scope`` is ``"run"`` or ``"group"``, ``dimension`` ``"calls"``, ``"tokens"`` or
    ``"cost"`` (USD), ``source`` who set the cap (``"role"``, ``"plan"``, ``"submit"``,
    ``"group"``); ``limit``, ``used`` (settled plus in flight) and ``needed`` (this call's
    worst case) are in the dimension's unit. Also a ``PermanentError``: the task fails for
    good, since a retry would loop into the same cap; an agent may catch it and finish with
    what it has.
    """

    def __init__(
        self,
        tenant_id: str | None,
        provider: str,
        reason: str,
        *,
        scope: str,
        dimension: str,
        limit: Any,
        used: Any,
        needed: Any,
        source: str,
    ) -> None:
        self.scope = scope
        self.dimension = dimension
        self.limit = limit
        self.used = used
        self.needed = needed
        self.source = source
        super().__init__(tenant_id, provider, reason)


@dataclass(frozen=True, slots=True)
class TargetFailure:
    """What happened at one target of a chain: how many attempts, and the last error."""

    provider: str
    model: str
    attempts: int
    error: LLMError

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} ({self.attempts} attempt(s)): {self.error}"


class LLMUnavailable(LLMError):
    """Every target of the chain failed, or the task's deadline came first (``note`` says
    so); ``failures`` has one entry per target tried, in order."""

    def __init__(
        self, requested: str, failures: Sequence[TargetFailure], note: str | None = None
    ) -> None:
        self.requested = requested
        self.failures = tuple(failures)
        self.note = note
        listed = "; ".join(str(f) for f in self.failures) or "no target was tried"
        if note is None:
            super().__init__(f"every target of {requested!r} failed: {listed}")
        else:
            super().__init__(f"{requested!r} gave up: {note}; so far: {listed}")


class LLMPermanentError(LLMError, PermanentError):
    """The request itself is at fault (400, 401, 403, 404, 422): not retried, not failed over.

    Also a ``PermanentError``: a handler that lets it through fails its task for good, since
    the same request would get the same answer. Fix the request (or the API key) and replay.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        status: int | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        super().__init__(message)


class UnknownModel(LLMPermanentError):
    """The requested model is neither a configured alias nor ``provider/model``."""

    def __init__(self, requested: str, aliases: Sequence[str]) -> None:
        self.requested = requested
        known = ", ".join(sorted(aliases)) or "none"
        super().__init__(
            f"unknown model {requested!r}: name an alias ({known}) or write provider/model; "
            "aliases are defined in the file named by CONVEYOR_LLM_CONFIG"
        )


# -- the webhook adapter (external runtimes; docs/agents.md) -----------------------------
