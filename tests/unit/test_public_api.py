"""The public surface is exactly ``conveyor.__all__``, and every name in it imports."""

from __future__ import annotations

import conveyor

EXPECTED = {
    "AgentSpec", "App", "BudgetRefused", "Cancel", "ConfigurationError", "ConveyorError",
    "DatabaseUnavailable", "InvalidTask", "LLMError", "LLMPermanentError", "LLMTimeout",
    "LLMUnavailable", "MigrationError", "NewTask", "PeriodicTask", "PermanentError",
    "PlanUpdate", "PlanViolation", "PostgresStore", "Priority", "QueueLimits",
    "QuotaExceeded", "ReplayFilter", "Retry", "RetryPolicy", "SchemaNotReady", "Settings",
    "SpendLimitExceeded", "Snooze", "StartRate", "StoreError", "TaskContext", "TaskNotFound",
    "TaskOutcome", "TaskState", "TenantAgentUpdate", "UnknownTenant", "Worker", "WorkerOptions",
    "__version__", "load_settings", "open_store",
}  # fmt: skip


def test_the_public_names_are_pinned() -> None:
    assert set(conveyor.__all__) == EXPECTED
    assert len(conveyor.__all__) == len(EXPECTED)


def test_every_public_name_imports() -> None:
    for name in conveyor.__all__:
        assert getattr(conveyor, name) is not None, name


def test_an_llm_permanent_error_sends_the_task_to_the_dead_letter_queue() -> None:
    assert issubclass(conveyor.LLMPermanentError, conveyor.PermanentError)
