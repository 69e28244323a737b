"""Every error Conveyor raises, in one hierarchy.

::

    ConveyorError
    ├── ConfigurationError        a setting or flag is invalid; the message names it
    │   └── InvalidAgentDefinition  a declarative agent's definition is refused (its
    │                             fields, template or output schema); `problems` lists them
    ├── StoreError                the database could not do what was asked
    │   ├── DatabaseUnavailable   the connection was lost or none could be made (server
    │   │                         down or restarting, network, wrong DSN); `retryable`
    │   │                         says whether trying again later can help
    │   ├── RefusedValue          the database refused a value (a NUL in text, a date or a
    │   │                         number out of its range, a check constraint): bad input
    │   ├── StoreConflict         a statement lost a race (deadlock, serialization failure,
    │   │                         statement timeout): trying again later is right
    │   ├── SchemaNotReady        migrations have not been applied; run `conveyor migrate`
    │   └── MigrationError        a migration file failed or the history is inconsistent
    ├── InvalidTask               a task submission is malformed (bad queue, priority, ...)
    │   └── IdempotencyConflict   an idempotency key already took a different request
    ├── UnknownTenant             the tenant does not exist; create it first
    ├── UndeclaredQueue           nothing serves or names that queue; declare it first
    ├── PlanViolation             the tenant's plan (or override) does not allow that role
    ├── QuotaExceeded             the tenant reached a monthly task limit
    ├── TaskNotFound              no task with that id (for that tenant)
    ├── InvalidSignal             a signal's name is malformed or its payload not storable
    ├── SignalRefused             a signal cannot be delivered: the task finished, the wait
    │                             timed out, or that name already carried another payload
    ├── GroupNotFound             no campaign (group) with that id (for that tenant)
    ├── IsolatedTaskError         an isolated handler raised in its child process (retried)
    ├── WorkerCrashed             a loop of the worker's own died; the process exits non-zero
    ├── ApiError                  the HTTP API answered a problem document (status, type,
    │   │                         detail, errors); raised by conveyor.Client/AsyncClient.
    │   │                         Where Conveyor has an error for the problem, the client
    │   │                         raises a subclass that is that error too:
    │   ├── ApiTaskNotFound       404: also a TaskNotFound
    │   ├── ApiInvalidTask        422 validation, invalid-task: also an InvalidTask
    │   ├── ApiUndeclaredQueue    422 undeclared-queue: also an UndeclaredQueue
    │   ├── ApiUnknownTenant      422 unknown-tenant: also an UnknownTenant
    │   ├── ApiPlanViolation      403 plan-violation: also a PlanViolation
    │   ├── ApiQuotaExceeded      429 quota-exceeded: also a QuotaExceeded
    │   ├── ApiSignalRefused      409 signal-refused: also a SignalRefused
    │   └── ApiUnavailable        429/503 still refused after the client's retries, or no
    │                             connection: also a DatabaseUnavailable (retry later)
    ├── LLMError                  a call through the LLM gateway (ctx.llm) failed
    │   ├── LLMAttemptError       one attempt at one (provider, model) failed; the gateway
    │   │   │                     retries it, fails over, or stops (core/llm_errors.py)
    │   │   ├── LLMStatusError    the provider answered an error status (429, 503, ...)
    │   │   ├── LLMTransportError no usable reply: connect refused, reset, malformed body
    │   │   └── LLMTimeout        a timeout layer fired: connect, ttft, gap or total
    │   ├── CircuitOpen           that target's breaker is open: failed fast, nothing sent
    │   ├── BudgetRefused         the tenant's budget did not admit the call
    │   │   ├── SpendLimitExceeded  the monthly token budget or spend limit is used up
    │   │   └── LLMCapExceeded    a run's or group's cap on calls, tokens or USD would be
    │   │                         crossed (the runaway guard). Both also PermanentErrors.
    │   ├── LLMUnavailable        every target of the chain failed; lists what each did
    │   └── LLMPermanentError     the request itself is wrong (400/401/403/404/422); not
    │       │                     retried, not failed over. Also a PermanentError.
    │       └── UnknownModel      the model is neither an alias nor provider/model
    └── TaskOutcome               raised by a handler to steer what happens next
        ├── Retry                 try again after a delay (counts an attempt)
        ├── Snooze                run again later without counting an attempt
        ├── Cancel                stop for good, recorded as cancelled
        └── PermanentError        fail for good now; the task goes to the dead-letter queue
            ├── WaitTimedOut      ctx.wait_for's deadline passed with no signal
            ├── IsolationLimitExceeded  an isolated task crossed its memory or CPU cap
            ├── InvalidAgentReply       a declarative agent's reply failed its output schema
            │                           twice (the repair too); `problems` lists why
            └── LLMPermanentError       (above: an LLMError and a PermanentError)

Not an error, and not under ConveyorError: ``TaskSuspended`` (a ``BaseException``, like
``asyncio.CancelledError``) carries a run out of its handler when ``ctx.wait_for`` must wait;
a handler's ``except Exception`` does not swallow it.

Driver errors (asyncpg) are translated into these at the store boundary with
``raise ... from exc``; nothing above ``conveyor.store`` sees a driver exception. HTTP
errors (httpx) are translated the same way in ``conveyor/gateway/endpoint.py``, and the
API's problem documents and httpx errors into ``ApiError`` in ``conveyor/client/problems.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


class ConveyorError(Exception):
    """Base of every error raised by Conveyor."""


class ConfigurationError(ConveyorError):
    """A setting, environment variable or CLI flag has an invalid value."""


class InvalidAgentDefinition(ConfigurationError):
    """A declarative agent's definition cannot be used; ``problems`` names each wrong field
    (``temperature: must be a number from 0 to 2``), and the message joins them."""

    def __init__(self, role: str, problems: Sequence[str]) -> None:
        self.role = role
        self.problems = tuple(problems)
        super().__init__(f"agent {role!r}: " + "; ".join(self.problems))


class StoreError(ConveyorError):
    """The database could not carry out an operation."""


class DatabaseUnavailable(StoreError):
    """PostgreSQL could not be reached: the connection was lost, or none could be made.

    ``retryable`` is False when waiting cannot help (wrong password, no such database): the
    configuration is wrong. Otherwise (server down, restarting, failing over, a reset
    socket) the same operation may succeed on a new connection.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class RefusedValue(StoreError):
    """The database refused a value it was given: a NUL character in text, a date or a
    number out of its range, a check constraint. The input is wrong, not the database."""


class StoreConflict(StoreError):
    """A statement lost a race with another (a deadlock, a serialization failure, a statement
    or lock timeout): nothing is wrong with it, and trying again later is right."""


class SchemaNotReady(StoreError):
    """The database has no (or an outdated) Conveyor schema: run ``conveyor migrate``."""


class MigrationError(StoreError):
    """A migration failed or the recorded migration history does not match the files."""


class InvalidTask(ConveyorError):
    """A task submission is malformed; the message says which field and why."""


class IdempotencyConflict(InvalidTask):
    """An idempotency key was sent again with a different request: the key names the first
    request only. Nothing of the submission is stored; use a new key for a new request."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"the idempotency key {key!r} was already used with a different request; "
            "send the same request to get its task, or a new key for a new one"
        )


class UnknownTenant(ConveyorError):
    """A task names a tenant that does not exist."""

    def __init__(self, tenant_ids: list[str]) -> None:
        self.tenant_ids = tenant_ids
        names = ", ".join(sorted(tenant_ids))
        super().__init__(f"unknown tenant(s): {names}; create them first (conveyor tenants add)")


class UndeclaredQueue(ConveyorError):
    """No worker served the queue and no plan, override, schedule or operator names it.

    Its tasks would wait forever; usually the name is misspelt. ``suggestions`` maps a
    missing name to a declared one that looks like it. Raised by the store's check
    (``PostgresStore.require_declared_queues``), which submitters of names typed by people
    run before enqueueing; enqueue itself does not.
    """

    def __init__(self, queues: list[str], suggestions: dict[str, str] | None = None) -> None:
        self.queues = queues
        self.suggestions = suggestions or {}
        names = ", ".join(
            repr(q) + (f" (did you mean {self.suggestions[q]!r}?)" if q in self.suggestions else "")
            for q in queues
        )
        subject = f"queue {names} is" if len(queues) == 1 else f"queues {names} are"
        super().__init__(
            f"{subject} not declared: no worker has served it and no plan, tenant override, "
            "periodic task or operator names it, so its tasks would wait forever; check the "
            f"spelling, or declare it first (conveyor queues declare {' '.join(queues)})"
        )


class PlanViolation(ConveyorError):
    """The tenant's plan, or its override for the role, does not allow the task.

    Nothing of the submission is stored; ``conveyor enqueue`` exits with status 1. (There
    is no HTTP API yet; when there is, this is its 403.)
    """

    def __init__(self, tenant_id: str, queue: str, reason: str) -> None:
        self.tenant_id = tenant_id
        self.queue = queue
        super().__init__(f"tenant {tenant_id!r} may not submit {queue!r} tasks: {reason}")


class QuotaExceeded(ConveyorError):
    """The submission would take the tenant past a monthly task limit.

    Nothing of the submission is stored; ``conveyor enqueue`` exits with status 1. (There
    is no HTTP API yet; when there is, this is its 429.)
    """

    def __init__(self, tenant_id: str, scope: str, used: int, asked: int, limit: int) -> None:
        self.tenant_id = tenant_id
        self.scope = scope
        self.used = used
        self.limit = limit
        super().__init__(
            f"tenant {tenant_id!r} has used {used} of its {limit} {scope} tasks this month; "
            f"{asked} more would exceed it (the limit resets on the 1st, or raise it)"
        )


class TaskNotFound(ConveyorError):
    """No task with that id exists (or it belongs to another tenant)."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id} not found")


class InvalidSignal(ConveyorError):
    """A signal's name is not a valid name, or its payload cannot be stored as JSON."""


class SignalRefused(ConveyorError):
    """A signal could not be delivered; ``reason`` says why and the message what to do.

    ``reason`` is ``"finished"`` (the task is succeeded, dead or cancelled),
    ``"timed-out"`` (the wait of that name passed its deadline first) or ``"conflict"``
    (a signal of that name was delivered before with another payload: the first one holds).
    """

    def __init__(self, task_id: int, name: str, reason: str, message: str) -> None:
        self.task_id = task_id
        self.name = name
        self.reason = reason
        super().__init__(message)


class TaskSuspended(BaseException):
    """Raised by ``ctx.wait_for`` when its signal has not come: the run ends here, and the
    worker records the task as waiting for ``name`` (for at most ``timeout`` seconds).

    A ``BaseException`` so that a handler's ``except Exception`` lets it through; a handler
    must not catch it (the task would then finish as if nothing had been awaited).
    """

    def __init__(self, name: str, timeout: float | None) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(f"waiting for signal {name!r}")


class GroupNotFound(ConveyorError):
    """No group with that id for the tenant: none registered and no task carries it."""

    def __init__(self, tenant_id: str, group_id: str) -> None:
        self.tenant_id = tenant_id
        self.group_id = group_id
        super().__init__(f"group {group_id!r} of tenant {tenant_id!r} not found")


class WorkerCrashed(ConveyorError):
    """One of the worker's own loops (flusher, heartbeat) died, or outcomes could not be
    written before exit: the worker stopped rather than hold tasks it cannot finish."""


class IsolatedTaskError(ConveyorError):
    """An ``isolation="process"`` handler raised in its child process.

    ``error_type``, ``message`` and ``child_traceback`` are the child's; the task is retried
    per the agent's policy, as if the handler had raised in the worker.
    """

    def __init__(self, error_type: str, message: str, child_traceback: str = "") -> None:
        self.error_type = error_type
        self.message = message
        self.child_traceback = child_traceback
        super().__init__(f"{error_type}: {message}" if message else error_type)


class ApiError(ConveyorError):
    """The HTTP API refused a request with an RFC 9457 problem document.

    ``status`` is the HTTP status, ``type`` the problem type
    (``urn:conveyor:problem:validation``), ``detail`` what went wrong, ``errors`` one entry
    per wrong field of a validation problem, ``retry_after`` the server's ``Retry-After`` in
    seconds (None without one), ``problem`` the whole document. The subclasses below are
    also Conveyor's own error for their problem type, so ``except TaskNotFound`` catches a
    404 of the API as it catches the store's; their own attributes (``task_id``, ``queues``,
    ...) hold what the request and the document say, empty or 0 where they say nothing.
    """

    def __init__(
        self,
        status: int,
        type: str,
        detail: str,
        *,
        errors: Sequence[dict[str, Any]] = (),
        retry_after: float | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        # Not super().__init__: the domain error a subclass mixes in takes other arguments;
        # _domain_fields sets that error's attributes instead.
        Exception.__init__(self, f"HTTP {status} ({type.rpartition(':')[2]}): {detail}")
        self.status = status
        self.type = type
        self.detail = detail
        self.errors = list(errors)
        self.retry_after = retry_after
        self.problem = problem or {}
        self._domain_fields(self.problem)

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        """Set the attributes of the Conveyor error a subclass also is."""


class ApiTaskNotFound(ApiError, TaskNotFound):
    """The API answered 404: no such task for the key's tenant (``task_id`` from the path)."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        last = str(problem.get("instance", "")).rstrip("/").split("/")
        numbers = [part for part in last if part.isdigit()]
        self.task_id = int(numbers[-1]) if numbers else 0


class ApiInvalidTask(ApiError, InvalidTask):
    """The API refused the submission as malformed (422); ``errors`` names the fields."""


class ApiUndeclaredQueue(ApiError, UndeclaredQueue):
    """The API refused a task for a queue nothing serves (422); ``detail`` names it."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        self.queues = list(problem.get("queues", []))
        self.suggestions = dict(problem.get("suggestions", {}))


class ApiUnknownTenant(ApiError, UnknownTenant):
    """The API refused a task of a tenant that does not exist (422)."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        self.tenant_ids = list(problem.get("tenant_ids", []))


class ApiPlanViolation(ApiError, PlanViolation):
    """The tenant's plan does not allow the role (403)."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        self.tenant_id = str(problem.get("tenant_id", ""))
        self.queue = str(problem.get("queue", ""))


class ApiQuotaExceeded(ApiError, QuotaExceeded):
    """The tenant reached a monthly task limit (429 without Retry-After: not retried)."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        self.tenant_id = str(problem.get("tenant_id", ""))
        self.scope = str(problem.get("scope", ""))
        self.used = int(problem.get("used", 0))
        self.limit = int(problem.get("limit", 0))


class ApiSignalRefused(ApiError, SignalRefused):
    """The API refused a signal (409): the task finished, its wait timed out, or the name
    carried another payload before; ``reason`` says which."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        self.task_id = int(problem.get("task_id", 0))
        self.name = str(problem.get("signal", ""))
        self.reason = str(problem.get("reason", ""))


class ApiUnavailable(ApiError, DatabaseUnavailable):
    """The API stayed unavailable (429/503 with Retry-After, or no connection) through every
    retry the client allows; ``status`` is 0 when no answer came at all. Retry later."""

    def _domain_fields(self, problem: dict[str, Any]) -> None:
        self.retryable = True


class TaskOutcome(ConveyorError):
    """Raised by a handler to choose what happens to its task."""


class Retry(TaskOutcome):
    """Run the task again after ``after`` seconds (``None``: the agent's backoff policy)."""

    def __init__(self, after: float | None = None, reason: str = "retry requested") -> None:
        if after is not None and after < 0:
            raise ValueError("Retry(after=...) must be >= 0 seconds")
        self.after = after
        super().__init__(reason)


class Snooze(TaskOutcome):
    """Run the task again after ``seconds`` without counting an attempt."""

    def __init__(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("Snooze(seconds) must be >= 0")
        self.seconds = seconds
        super().__init__(f"snoozed for {seconds}s")


class Cancel(TaskOutcome):
    """Stop the task for good and record it as cancelled."""

    def __init__(self, reason: str = "cancelled by handler") -> None:
        super().__init__(reason)


class PermanentError(TaskOutcome):
    """Fail the task now without further attempts; it goes to the dead-letter queue."""


class WaitTimedOut(PermanentError):
    """``ctx.wait_for(name, timeout=...)`` reached its deadline before the signal came.

    A handler may catch it (send a reminder, escalate, wait under another name). Uncaught,
    it fails the task for good (dead), without retries: the timeout is recorded with the
    task, so every rerun would meet it again at the same ``wait_for``.
    """

    def __init__(self, name: str, timeout: float | None) -> None:
        self.name = name
        self.timeout = timeout
        after = f" after {timeout:g}s" if timeout is not None else ""
        super().__init__(f"the wait for signal {name!r} timed out{after} with no signal")


class IsolationLimitExceeded(PermanentError):
    """An isolated task crossed its memory or CPU cap; only its child process was killed.

    ``limit`` is ``"memory"`` or ``"cpu"``. Not retried: the same input would cross the
    same cap again. Raise the agent's ``memory_limit_mb`` or ``cpu_limit_seconds`` instead.
    """

    def __init__(self, limit: str, message: str) -> None:
        self.limit = limit
        super().__init__(message)


class InvalidAgentReply(PermanentError):
    """A declarative agent's reply did not match its output schema, nor did the one repair.

    ``problems`` are the validation errors of the last reply. Not retried: the repair was
    the second chance, and a new attempt would pay for the same prompt again; fix the
    definition (``PUT /v1/agents/{role}``) and replay the task from the dead-letter queue.
    """

    def __init__(self, message: str, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(message)


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
