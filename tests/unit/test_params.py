"""Store parameter objects refuse malformed input before it reaches SQL."""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.errors import InvalidTask
from conveyor.store.params import (
    MAX_IDEMPOTENCY_KEY,
    Finish,
    LeaseRef,
    NewTask,
    ReplayFilter,
    validate_queue_name,
)
from conveyor.types import MAX_PRIORITY, MIN_PRIORITY, Priority, TaskState

QUEUE_CHARS = set(string.ascii_letters + string.digits + "_.:-")
valid_queues = st.builds(
    str.__add__,
    st.sampled_from(string.ascii_letters + string.digits),
    st.text(alphabet="".join(sorted(QUEUE_CHARS)), max_size=127),
)


def test_defaults() -> None:
    task = NewTask(queue="copywriter")
    assert task.payload == {}
    assert task.tenant_id == "default"
    assert task.priority == Priority.NORMAL
    assert task.max_attempts is None  # the agent's retry policy decides at first claim
    assert task.run_at is None
    assert task.idempotency_key is None


@given(valid_queues)
def test_valid_queue_names_are_accepted(queue: str) -> None:
    assert validate_queue_name(queue) == queue
    assert NewTask(queue=queue).queue == queue


@given(st.text(max_size=140))
def test_an_accepted_queue_name_is_short_and_plain(queue: str) -> None:
    try:
        validate_queue_name(queue)
    except InvalidTask as exc:
        assert repr(queue) in str(exc)
    else:
        assert 1 <= len(queue) <= 128
        assert set(queue) <= QUEUE_CHARS
        assert queue[0].isalnum()


@pytest.mark.parametrize(
    "queue",
    ["", "-lead", "_lead", ".lead", "two words", "a/b", "tab\there", "x" * 129, "café", "abc\n"],
)
def test_bad_queue_names_are_rejected_by_name(queue: str) -> None:
    with pytest.raises(InvalidTask, match=re.escape(repr(queue))):
        NewTask(queue=queue)


def test_longest_queue_name_is_accepted() -> None:
    assert NewTask(queue="q" * 128).queue == "q" * 128


@given(st.integers(MIN_PRIORITY, MAX_PRIORITY))
def test_priorities_in_range_are_accepted(priority: int) -> None:
    assert NewTask(queue="q", priority=priority).priority == priority


@given(st.integers().filter(lambda p: not MIN_PRIORITY <= p <= MAX_PRIORITY))
def test_priorities_out_of_range_are_rejected(priority: int) -> None:
    with pytest.raises(InvalidTask, match=rf"priority must be between 1 .* got {priority}"):
        NewTask(queue="q", priority=priority)


@pytest.mark.parametrize("max_attempts", [0, -1])
def test_max_attempts_must_allow_one_run(max_attempts: int) -> None:
    with pytest.raises(InvalidTask, match=f"max_attempts must be >= 1, got {max_attempts}"):
        NewTask(queue="q", max_attempts=max_attempts)


@pytest.mark.parametrize("timeout", [0.0, -5.0])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(InvalidTask, match="timeout_seconds"):
        NewTask(queue="q", timeout_seconds=timeout)


def test_naive_run_at_is_rejected_and_aware_accepted() -> None:
    with pytest.raises(InvalidTask, match="timezone-aware"):
        NewTask(queue="q", run_at=datetime(2026, 1, 1))
    aware = datetime(2026, 1, 1, tzinfo=UTC)
    assert NewTask(queue="q", run_at=aware).run_at == aware


@pytest.mark.parametrize("length", [1, 40, MAX_IDEMPOTENCY_KEY])
def test_idempotency_keys_up_to_the_limit_are_accepted(length: int) -> None:
    assert NewTask(queue="q", idempotency_key="k" * length).idempotency_key == "k" * length


@pytest.mark.parametrize("length", [0, MAX_IDEMPOTENCY_KEY + 1, 10_000])
def test_idempotency_keys_out_of_bounds_are_rejected(length: int) -> None:
    with pytest.raises(InvalidTask, match=f"1-{MAX_IDEMPOTENCY_KEY} characters"):
        NewTask(queue="q", idempotency_key="k" * length)


@pytest.mark.parametrize("payload", [[1, 2], "text", 3, None])
def test_payload_must_be_a_json_object(payload: Any) -> None:
    with pytest.raises(InvalidTask, match="payload must be a JSON object"):
        NewTask(queue="q", payload=payload)


def test_replay_filter_requires_a_narrowing_field() -> None:
    with pytest.raises(ValueError, match="say which dead tasks to replay"):
        ReplayFilter()
    with pytest.raises(ValueError, match="say which dead tasks to replay"):
        ReplayFilter(task_ids=(), queue="", tenant_id="")


@pytest.mark.parametrize(
    "fields",
    [{"task_ids": (7,)}, {"queue": "copywriter"}, {"tenant_id": "acme"}, {"everything": True}],
)
def test_replay_filter_accepts_any_one_field(fields: dict[str, Any]) -> None:
    chosen = ReplayFilter(**fields)
    for key, value in fields.items():
        assert getattr(chosen, key) == value


@pytest.mark.parametrize("state", sorted(TaskState))
def test_finish_requires_a_terminal_state(state: TaskState) -> None:
    lease = LeaseRef(task_id=1, lease_token=9)
    if state.is_terminal:
        assert Finish(lease, state).state is state
    else:
        with pytest.raises(ValueError, match=f"terminal state, got {state}"):
            Finish(lease, state)
