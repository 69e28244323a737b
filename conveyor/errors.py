"""Every error Conveyor raises, in one hierarchy.

::

    ConveyorError
    ├── ConfigurationError        a setting or flag is invalid; the message names it
    ├── StoreError                the database could not do what was asked
    │   ├── DatabaseUnavailable   no connection could be made (server down, wrong DSN)
    │   ├── SchemaNotReady        migrations have not been applied; run `conveyor migrate`
    │   └── MigrationError        a migration file failed or the history is inconsistent
    ├── InvalidTask               a task submission is malformed (bad queue, priority, ...)
    ├── UnknownTenant             the tenant does not exist; create it first
    ├── PlanViolation             the tenant's plan (or override) does not allow that role
    ├── QuotaExceeded             the tenant reached a monthly task limit
    ├── TaskNotFound              no task with that id (for that tenant)
    ├── GroupNotFound             no campaign (group) with that id (for that tenant)
    ├── IsolatedTaskError         an isolated handler raised in its child process (retried)
    └── TaskOutcome               raised by a handler to steer what happens next
        ├── Retry                 try again after a delay (counts an attempt)
        ├── Snooze                run again later without counting an attempt
        ├── Cancel                stop for good, recorded as cancelled
        └── PermanentError        fail for good now; the task goes to the dead-letter queue
            └── IsolationLimitExceeded  an isolated task crossed its memory or CPU cap

Driver errors (asyncpg) are translated into these at the store boundary with
``raise ... from exc``; nothing above ``conveyor.store`` sees a driver exception.
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base of every error raised by Conveyor."""


class ConfigurationError(ConveyorError):
    """A setting, environment variable or CLI flag has an invalid value."""


class StoreError(ConveyorError):
    """The database could not carry out an operation."""


class DatabaseUnavailable(StoreError):
    """No connection to PostgreSQL could be made."""


class SchemaNotReady(StoreError):
    """The database has no (or an outdated) Conveyor schema: run ``conveyor migrate``."""


class MigrationError(StoreError):
    """A migration failed or the recorded migration history does not match the files."""


class InvalidTask(ConveyorError):
    """A task submission is malformed; the message says which field and why."""


class UnknownTenant(ConveyorError):
    """A task names a tenant that does not exist."""

    def __init__(self, tenant_ids: list[str]) -> None:
        self.tenant_ids = tenant_ids
        names = ", ".join(sorted(tenant_ids))
        super().__init__(f"unknown tenant(s): {names}; create them first (conveyor tenants add)")


class PlanViolation(ConveyorError):
    """The tenant's plan, or its override for the role, does not allow the task.

    Nothing of the submission is stored. The HTTP API answers 403.
    """

    def __init__(self, tenant_id: str, queue: str, reason: str) -> None:
        self.tenant_id = tenant_id
        self.queue = queue
        super().__init__(f"tenant {tenant_id!r} may not submit {queue!r} tasks: {reason}")


class QuotaExceeded(ConveyorError):
    """The submission would take the tenant past a monthly task limit.

    Nothing of the submission is stored. The HTTP API answers 429.
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


class GroupNotFound(ConveyorError):
    """No group with that id for the tenant: none registered and no task carries it."""

    def __init__(self, tenant_id: str, group_id: str) -> None:
        self.tenant_id = tenant_id
        self.group_id = group_id
        super().__init__(f"group {group_id!r} of tenant {tenant_id!r} not found")


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


class IsolationLimitExceeded(PermanentError):
    """An isolated task crossed its memory or CPU cap; only its child process was killed.

    ``limit`` is ``"memory"`` or ``"cpu"``. Not retried: the same input would cross the
    same cap again. Raise the agent's ``memory_limit_mb`` or ``cpu_limit_seconds`` instead.
    """

    def __init__(self, limit: str, message: str) -> None:
        self.limit = limit
        super().__init__(message)
