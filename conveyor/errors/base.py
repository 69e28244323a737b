"""The errors of the store, the queue, tasks, signals and webhooks, and the outcomes a
handler raises; the hierarchy is in ``conveyor/errors/__init__.py``."""

from __future__ import annotations

from collections.abc import Sequence


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


class CallbackRefused(ConveyorError):
    """A runtime's callback (result, progress, heartbeat) was refused: its token is not one
    Conveyor issued for that task (``reason`` "invalid", 401), its deadline passed
    ("expired", 403), or the result was already reported with it ("used", 409)."""

    def __init__(self, task_id: int, reason: str, message: str) -> None:
        self.task_id = task_id
        self.reason = reason
        super().__init__(message)


class WebhookRefused(PermanentError):
    """The webhook adapter will not send this task: the URL is off the operator's allow-list
    (``CONVEYOR_WEBHOOK_ALLOWED_HOSTS``), or a setting it needs is unset. The message names
    the setting. Not retried: the same task would be refused again."""


class WebhookRejected(PermanentError):
    """The external runtime answered the delivery with a 4xx (not 408/409/429): the request
    is at fault, so the task fails for good with the status and the start of the response."""


class WebhookDeliveryFailed(ConveyorError):
    """The delivery failed after its in-run retries (5xx, 429, timeouts, connection errors);
    the task is retried by its agent's RetryPolicy."""


class ExternalTaskFailed(ConveyorError):
    """The external runtime reported a retryable failure; the task is retried by policy."""


class ExternalTaskRejected(PermanentError):
    """The external runtime reported a failure that is not retryable: the task is dead."""


class CallbackTimedOut(ConveyorError):
    """No result callback came by the deadline (heartbeats included). Counts an attempt:
    the task is delivered again by its agent's RetryPolicy, or dead when none are left."""
