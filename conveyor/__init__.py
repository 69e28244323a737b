"""Conveyor: a durable control plane and asyncio worker runtime for AI-agent workloads.

The public surface is exactly ``__all__`` (a test pins it): the SDK (``App``,
``TaskContext``, ``NewTask``, the errors and outcomes), the tenant-bound view of the
store (``TenantStore``, from ``open_store(...)`` then ``store.for_tenant(tenant_id)``), and
the HTTP API's client (``Client``, ``AsyncClient``).
The engine (``conveyor.store.postgres.PostgresStore``, ``conveyor.worker.runtime.Worker``)
stays importable from its module for operators' tools, but is not part of this surface.

Importing ``conveyor`` does not import the database driver: ``open_store`` loads it on
first use, so an agent module, the gateway or a client imports without asyncpg. The
clients load httpx on first use in the same way, so a worker does not pay for them.
"""

from typing import TYPE_CHECKING, Any

from conveyor.app import AgentSpec, App
from conveyor.core.backoff import RetryPolicy
from conveyor.core.llm_caps import LLMCaps
from conveyor.errors import (
    ApiError,
    ApiUnavailable,
    BudgetRefused,
    Cancel,
    ConfigurationError,
    ConveyorError,
    DatabaseUnavailable,
    GroupNotFound,
    InvalidTask,
    LLMCapExceeded,
    LLMError,
    LLMPermanentError,
    LLMTimeout,
    LLMUnavailable,
    MigrationError,
    PermanentError,
    PlanViolation,
    QuotaExceeded,
    Retry,
    SchemaNotReady,
    SignalRefused,
    Snooze,
    SpendLimitExceeded,
    StoreError,
    TaskNotFound,
    TaskOutcome,
    UnknownTenant,
    WaitTimedOut,
)
from conveyor.settings import Settings, load_settings
from conveyor.store.params import (
    NewTask,
    PeriodicTask,
    PlanUpdate,
    QueueLimits,
    ReplayFilter,
    StartRate,
    TaskListParams,
    TenantAgentUpdate,
)
from conveyor.store.records import GroupStatus, TaskRecord
from conveyor.store.tenant import TenantStore
from conveyor.types import Priority, TaskState
from conveyor.worker.context import TaskContext
from conveyor.worker.options import WorkerOptions

if TYPE_CHECKING:
    from conveyor.client.async_ import AsyncClient
    from conveyor.client.retries import ClientRetries
    from conveyor.client.sync import Client
    from conveyor.store.database import open_store

__version__ = "0.1.0"

__all__ = [
    "AgentSpec",
    "ApiError",
    "ApiUnavailable",
    "App",
    "AsyncClient",
    "BudgetRefused",
    "Cancel",
    "Client",
    "ClientRetries",
    "ConfigurationError",
    "ConveyorError",
    "DatabaseUnavailable",
    "GroupNotFound",
    "GroupStatus",
    "InvalidTask",
    "LLMCapExceeded",
    "LLMCaps",
    "LLMError",
    "LLMPermanentError",
    "LLMTimeout",
    "LLMUnavailable",
    "MigrationError",
    "NewTask",
    "PeriodicTask",
    "PermanentError",
    "PlanUpdate",
    "PlanViolation",
    "Priority",
    "QueueLimits",
    "QuotaExceeded",
    "ReplayFilter",
    "Retry",
    "RetryPolicy",
    "SchemaNotReady",
    "Settings",
    "SignalRefused",
    "Snooze",
    "SpendLimitExceeded",
    "StartRate",
    "StoreError",
    "TaskContext",
    "TaskListParams",
    "TaskNotFound",
    "TaskOutcome",
    "TaskRecord",
    "TaskState",
    "TenantAgentUpdate",
    "TenantStore",
    "UnknownTenant",
    "WaitTimedOut",
    "WorkerOptions",
    "__version__",
    "load_settings",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # open_store opens a database, so it brings the driver: load it on first use only.
    if name == "open_store":
        from conveyor.store.database import open_store

        return open_store
    # The clients bring httpx: the same.
    if name in ("Client", "AsyncClient", "ClientRetries"):
        from conveyor import client

        return getattr(client, name)
    raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
