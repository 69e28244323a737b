"""What the worker makes of a failed run: a lost database is not the task's fault, and no
outcome carries a NUL that would fail the batch it is written with."""

from __future__ import annotations

import json

from conveyor.errors import Cancel, DatabaseUnavailable, IsolatedTaskError, PermanentError, Retry
from conveyor.store.params import Finish
from conveyor.store.records import ClaimedTask
from conveyor.types import TaskState
from conveyor.worker.outcomes import caused_by_lost_database, error_record, success


def test_only_the_error_the_task_s_store_calls_gave_up_with_releases() -> None:
    gave_up = DatabaseUnavailable("lost the connection")
    assert caused_by_lost_database(gave_up, gave_up)
    try:
        try:
            raise gave_up
        except DatabaseUnavailable as exc:
            raise RuntimeError("the agent wrapped it") from exc
    except RuntimeError as wrapped:
        assert caused_by_lost_database(wrapped, gave_up)
    # the same kind of error from elsewhere (the handler's own store) is the task's own
    assert not caused_by_lost_database(DatabaseUnavailable("its own pool"), gave_up)
    assert not caused_by_lost_database(gave_up, None)


def test_the_handler_s_own_decisions_stand() -> None:
    gave_up = DatabaseUnavailable("lost the connection")
    for decision in (PermanentError("give up"), Retry(), Cancel("stop")):
        decision.__context__ = gave_up
        assert not caused_by_lost_database(decision, gave_up)
    try:
        try:
            raise gave_up
        except DatabaseUnavailable:
            raise ValueError("hidden on purpose") from None
    except ValueError as hidden:
        assert not caused_by_lost_database(hidden, gave_up)


def test_the_task_s_own_errors_are_charged() -> None:
    assert not caused_by_lost_database(ConnectionError("the agent's own API is down"), None)
    assert not caused_by_lost_database(IsolatedTaskError("DatabaseUnavailable", "gone"), None)


def test_error_records_hold_no_nul() -> None:
    record = error_record(ValueError("a\x00b"), attempt=1)
    assert "\x00" not in json.dumps(record) and "\\u0000" not in json.dumps(record)
    assert record["message"] == "a\\0b"


def claimed() -> ClaimedTask:
    fields = {name: None for name in ClaimedTask.__slots__}
    fields.update(
        id=1,
        lease_token=7,
        queue="work",
        tenant_id="default",
        attempts=1,
        max_attempts=3,
        payload={},
    )
    return ClaimedTask(**fields)  # type: ignore[arg-type]


def test_a_result_with_a_nul_fails_the_task_alone() -> None:
    for result in ("x\x00", {"text": "x\x00"}):
        outcome = success(claimed(), result)
        assert isinstance(outcome, Finish) and outcome.state is TaskState.DEAD
        assert "NUL" in outcome.error["message"]
    fine = success(claimed(), {"text": "ok"})
    assert isinstance(fine, Finish) and fine.state is TaskState.SUCCEEDED
