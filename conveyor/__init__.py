"""Conveyor: a durable control plane and asyncio worker runtime for AI-agent workloads.

The public surface is exactly ``__all__`` (a test pins it); everything else is internal.
"""

from conveyor.app import AgentSpec, App
from conveyor.core.backoff import RetryPolicy
from conveyor.errors import (
    BudgetRefused,
    Cancel,
    ConfigurationError,
    ConveyorError,
    DatabaseUnavailable,
    InvalidTask,
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
    Snooze,
    SpendLimitExceeded,
    StoreError,
    TaskNotFound,
    TaskOutcome,
    UnknownTenant,
)
from conveyor.settings import Settings, load_settings
from conveyor.store.database import open_store
from conveyor.store.params import (
    NewTask,
    PeriodicTask,
    PlanUpdate,
    QueueLimits,
    ReplayFilter,
    StartRate,
    TenantAgentUpdate,
)
from conveyor.store.postgres import PostgresStore
from conveyor.types import Priority, TaskState
from conveyor.worker.context import TaskContext
from conveyor.worker.options import WorkerOptions
from conveyor.worker.runtime import Worker

__version__ = "0.1.0"

__all__ = [
    "AgentSpec",
    "App",
    "BudgetRefused",
    "Cancel",
    "ConfigurationError",
    "ConveyorError",
    "DatabaseUnavailable",
    "InvalidTask",
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
    "PostgresStore",
    "Priority",
    "QueueLimits",
    "QuotaExceeded",
    "ReplayFilter",
    "Retry",
    "RetryPolicy",
    "SchemaNotReady",
    "Settings",
    "Snooze",
    "SpendLimitExceeded",
    "StartRate",
    "StoreError",
    "TaskContext",
    "TaskNotFound",
    "TaskOutcome",
    "TaskState",
    "TenantAgentUpdate",
    "UnknownTenant",
    "Worker",
    "WorkerOptions",
    "__version__",
    "load_settings",
    "open_store",
]
