"""Campaigns (groups): status counts and a follow-up enqueued exactly once at completion."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.errors import GroupNotFound
from conveyor.store.params import ClaimRequest, Finish, LeaseRef, NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.integration.helpers import fetchval


def succeed(task_id: int, token: int) -> list[Finish]:
    return [Finish(LeaseRef(task_id, token), TaskState.SUCCEEDED, None)]


async def test_status_counts_and_the_follow_up(store: PostgresStore) -> None:
    await store.create_group(
        "default", "c1", on_complete=NewTask("analyst", {"report": "campaign"}, priority=1)
    )
    await store.enqueue_batch([NewTask("copywriter", group_id="c1") for _ in range(3)])
    claimed = await store.claim(ClaimRequest(("copywriter",), 2, "w", 30))
    await store.finish(succeed(claimed[0].id, claimed[0].lease_token))
    status = await store.group_status("default", "c1")
    assert status.counts == {TaskState.QUEUED: 1, TaskState.RUNNING: 1, TaskState.SUCCEEDED: 1}
    assert status.completed_at is None and status.total == 3

    await store.finish(
        [Finish(LeaseRef(claimed[1].id, claimed[1].lease_token), TaskState.DEAD, error={})]
    )
    [last] = await store.claim(ClaimRequest(("copywriter",), 1, "w", 30))
    await store.finish(succeed(last.id, last.lease_token))
    status = await store.group_status("default", "c1")
    assert status.counts == {TaskState.SUCCEEDED: 2, TaskState.DEAD: 1}
    assert status.completed_at is not None and status.follow_up_id is not None
    follow_up = await store.get_task(status.follow_up_id)
    assert follow_up.queue == "analyst" and follow_up.priority == 1
    assert follow_up.payload == {"report": "campaign", "_group_id": "c1"}


async def test_the_last_two_finishing_at_once_complete_the_group_once(
    store: PostgresStore, wide_store: PostgresStore
) -> None:
    for round_ in range(8):
        group = f"race-{round_}"
        await store.create_group("default", group, on_complete=NewTask("analyst"))
        await store.enqueue_batch([NewTask("copywriter", group_id=group) for _ in range(2)])
        a, b = await store.claim(ClaimRequest(("copywriter",), 2, "w", 30))
        await asyncio.gather(
            wide_store.finish(succeed(a.id, a.lease_token)),
            wide_store.finish(succeed(b.id, b.lease_token)),
        )
        status = await store.group_status("default", group)
        assert status.completed_at is not None, round_
    follow_ups = await fetchval(store, "SELECT count(*) FROM tasks WHERE queue = 'analyst'")
    assert follow_ups == 8


async def test_the_sweep_completes_a_group_whose_check_was_missed(store: PostgresStore) -> None:
    await store.enqueue(NewTask("copywriter", group_id="late"))
    [task] = await store.claim(ClaimRequest(("copywriter",), 1, "w", 30))
    await store.finish(succeed(task.id, task.lease_token))
    # registered only after its task finished: no finish will check it again
    await store.create_group("default", "late", on_complete=NewTask("analyst"))
    assert (await store.group_status("default", "late")).completed_at is None
    [follow_up] = await store.sweep_open_groups()
    assert (await store.group_status("default", "late")).follow_up_id == follow_up
    assert await store.sweep_open_groups() == []  # once


async def test_a_group_without_tasks_is_not_complete_and_unknown_groups_are_errors(
    store: PostgresStore,
) -> None:
    await store.create_group("default", "empty", on_complete=NewTask("analyst"))
    assert await store.sweep_open_groups() == []
    with pytest.raises(GroupNotFound, match="'nope'"):
        await store.group_status("default", "nope")
