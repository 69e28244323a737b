"""The public surface is exactly ``conveyor.__all__``, and every name in it imports."""

from __future__ import annotations

import conveyor

EXPECTED = {
    "AgentSpec", "ApiError", "ApiUnavailable", "App", "AsyncClient", "Client", "ClientRetries",
    "BudgetRefused", "Cancel", "ConfigurationError", "ConveyorError",
    "DatabaseUnavailable", "GroupNotFound", "GroupStatus", "InvalidTask", "LLMCapExceeded",
    "LLMCaps", "LLMError",
    "LLMPermanentError", "LLMTimeout", "LLMUnavailable", "MigrationError", "NewTask",
    "PeriodicTask", "PermanentError", "PlanUpdate", "PlanViolation", "Priority", "QueueLimits",
    "QuotaExceeded", "ReplayFilter", "Retry", "RetryPolicy", "SchemaNotReady", "Settings",
    "SignalRefused", "SpendLimitExceeded", "Snooze", "StartRate", "StoreError", "TaskContext",
    "TaskListParams", "TaskNotFound", "TaskOutcome", "TaskRecord", "TaskState",
    "TenantAgentUpdate", "TenantStore", "UnknownTenant", "WaitTimedOut", "WorkerOptions",
    "__version__", "load_settings", "open_store",
}  # fmt: skip


def test_the_public_names_are_pinned() -> None:
    assert set(conveyor.__all__) == EXPECTED
    assert len(conveyor.__all__) == len(EXPECTED)


def test_every_public_name_imports() -> None:
    for name in conveyor.__all__:
        assert getattr(conveyor, name) is not None, name


def test_the_engine_is_not_public() -> None:
    # Tenant-facing code holds a TenantStore; the engine stays in its module for operators.
    for name in ("PostgresStore", "Worker"):
        assert name not in conveyor.__all__
        assert not hasattr(conveyor, name), name


def test_open_store_is_the_one_loaded_on_use() -> None:
    from conveyor.store.database import open_store

    assert conveyor.open_store is open_store


def test_the_clients_are_loaded_on_use() -> None:
    from conveyor.client import AsyncClient, Client, ClientRetries

    assert conveyor.Client is Client and conveyor.AsyncClient is AsyncClient
    assert conveyor.ClientRetries is ClientRetries


def test_an_api_404_is_a_task_not_found() -> None:
    from conveyor.errors import ApiTaskNotFound

    assert issubclass(ApiTaskNotFound, conveyor.TaskNotFound)
    assert issubclass(ApiTaskNotFound, conveyor.ApiError)


def test_an_llm_permanent_error_sends_the_task_to_the_dead_letter_queue() -> None:
    assert issubclass(conveyor.LLMPermanentError, conveyor.PermanentError)
