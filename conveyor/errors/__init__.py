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
    ├── CallbackRefused           an external runtime's callback token is wrong (401),
    │                             expired (403) or already used for the result (409)
    ├── WebhookDeliveryFailed     the webhook adapter's delivery failed after its retries
    │                             (5xx, 429, timeout, connection); the task is retried
    ├── ExternalTaskFailed        the external runtime reported a retryable failure
    ├── CallbackTimedOut          no result callback by the deadline; retried by policy
    └── TaskOutcome               raised by a handler to steer what happens next
        ├── Retry                 try again after a delay (counts an attempt)
        ├── Snooze                run again later without counting an attempt
        ├── Cancel                stop for good, recorded as cancelled
        └── PermanentError        fail for good now; the task goes to the dead-letter queue
            ├── WaitTimedOut      ctx.wait_for's deadline passed with no signal
            ├── IsolationLimitExceeded  an isolated task crossed its memory or CPU cap
            ├── InvalidAgentReply       a declarative agent's reply failed its output schema
            │                           twice (the repair too); `problems` lists why
            ├── WebhookRefused    the webhook URL is off the allow-list, or a setting unset
            ├── WebhookRejected   the external runtime answered the delivery with a 4xx
            ├── ExternalTaskRejected  the external runtime reported a permanent failure
            └── LLMPermanentError       (above: an LLMError and a PermanentError)

Not an error, and not under ConveyorError: ``TaskSuspended`` (a ``BaseException``, like
``asyncio.CancelledError``) carries a run out of its handler when ``ctx.wait_for`` must wait;
a handler's ``except Exception`` does not swallow it.

Driver errors (asyncpg) are translated into these at the store boundary with
``raise ... from exc``; nothing above ``conveyor.store`` sees a driver exception. HTTP
errors (httpx) are translated the same way in ``conveyor/gateway/endpoint.py``, and the
API's problem documents and httpx errors into ``ApiError`` in ``conveyor/client/problems.py``.
"""

from conveyor.errors.api import (
    ApiError,
    ApiInvalidTask,
    ApiPlanViolation,
    ApiQuotaExceeded,
    ApiSignalRefused,
    ApiTaskNotFound,
    ApiUnavailable,
    ApiUndeclaredQueue,
    ApiUnknownTenant,
)
from conveyor.errors.base import (
    CallbackRefused,
    CallbackTimedOut,
    Cancel,
    ConfigurationError,
    ConveyorError,
    DatabaseUnavailable,
    ExternalTaskFailed,
    ExternalTaskRejected,
    GroupNotFound,
    IdempotencyConflict,
    InvalidAgentDefinition,
    InvalidAgentReply,
    InvalidSignal,
    InvalidTask,
    IsolatedTaskError,
    IsolationLimitExceeded,
    MigrationError,
    PermanentError,
    PlanViolation,
    QuotaExceeded,
    RefusedValue,
    Retry,
    SchemaNotReady,
    SignalRefused,
    Snooze,
    StoreConflict,
    StoreError,
    TaskNotFound,
    TaskOutcome,
    TaskSuspended,
    UndeclaredQueue,
    UnknownTenant,
    WaitTimedOut,
    WebhookDeliveryFailed,
    WebhookRefused,
    WebhookRejected,
    WorkerCrashed,
)
from conveyor.errors.llm import (
    BudgetRefused,
    CircuitOpen,
    LLMAttemptError,
    LLMCapExceeded,
    LLMError,
    LLMPermanentError,
    LLMStatusError,
    LLMTimeout,
    LLMTransportError,
    LLMUnavailable,
    SpendLimitExceeded,
    TargetFailure,
    UnknownModel,
)

__all__ = [
    "ApiError",
    "ApiInvalidTask",
    "ApiPlanViolation",
    "ApiQuotaExceeded",
    "ApiSignalRefused",
    "ApiTaskNotFound",
    "ApiUnavailable",
    "ApiUndeclaredQueue",
    "ApiUnknownTenant",
    "BudgetRefused",
    "CallbackRefused",
    "CallbackTimedOut",
    "Cancel",
    "CircuitOpen",
    "ConfigurationError",
    "ConveyorError",
    "DatabaseUnavailable",
    "ExternalTaskFailed",
    "ExternalTaskRejected",
    "GroupNotFound",
    "IdempotencyConflict",
    "InvalidAgentDefinition",
    "InvalidAgentReply",
    "InvalidSignal",
    "InvalidTask",
    "IsolatedTaskError",
    "IsolationLimitExceeded",
    "LLMAttemptError",
    "LLMCapExceeded",
    "LLMError",
    "LLMPermanentError",
    "LLMStatusError",
    "LLMTimeout",
    "LLMTransportError",
    "LLMUnavailable",
    "MigrationError",
    "PermanentError",
    "PlanViolation",
    "QuotaExceeded",
    "RefusedValue",
    "Retry",
    "SchemaNotReady",
    "SignalRefused",
    "Snooze",
    "SpendLimitExceeded",
    "StoreConflict",
    "StoreError",
    "TargetFailure",
    "TaskNotFound",
    "TaskOutcome",
    "TaskSuspended",
    "UndeclaredQueue",
    "UnknownModel",
    "UnknownTenant",
    "WaitTimedOut",
    "WebhookDeliveryFailed",
    "WebhookRefused",
    "WebhookRejected",
    "WorkerCrashed",
]
