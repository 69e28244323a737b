"""The tenant-bound view on real PostgreSQL: another tenant's task or group behaves exactly
like one that does not exist, lists hold only the tenant's own tasks, and enqueueing is
bound to the view's tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.errors import GroupNotFound, InvalidTask, TaskNotFound
from conveyor.store.params import Finish, NewTask, TaskListParams
from conveyor.store.postgres import PostgresStore
from conveyor.store.tenant import TenantStore
from conveyor.types import TaskState
from tests.integration.helpers import claim, lease

MISSING = 987_654_321


@pytest.fixture
async def acme(store: PostgresStore) -> TenantStore:
    await store.create_tenant("acme")
    return store.for_tenant("acme")


@pytest.fixture
async def globex(store: PostgresStore) -> TenantStore:
    await store.create_tenant("globex")
    return store.for_tenant("globex")


async def test_another_tenants_task_cannot_be_read(acme: TenantStore, globex: TenantStore) -> None:
    theirs = (await globex.enqueue(NewTask("q", {"secret": 1}))).task_id
    with pytest.raises(TaskNotFound) as other:
        await acme.get_task(theirs)
    with pytest.raises(TaskNotFound) as missing:
        await acme.get_task(MISSING)
    assert type(other.value) is type(missing.value)
    assert (await globex.get_task(theirs)).payload == {"secret": 1}


async def test_another_tenants_finished_task_cannot_be_read(
    store: PostgresStore, acme: TenantStore, globex: TenantStore
) -> None:
    theirs = (await globex.enqueue(NewTask("q"))).task_id
    [task] = await claim(store)
    await store.finish([Finish(lease(task), TaskState.SUCCEEDED, result={"ok": True})])
    with pytest.raises(TaskNotFound):
        await acme.get_task(theirs)
    assert (await globex.get_task(theirs)).result == {"ok": True}


async def test_another_tenants_task_cannot_be_cancelled(
    store: PostgresStore, acme: TenantStore, globex: TenantStore
) -> None:
    running = (await globex.enqueue(NewTask("q"))).task_id
    [claimed] = await claim(store)
    waiting = (await globex.enqueue(NewTask("q"))).task_id
    later = NewTask("q", run_at=datetime.now(UTC) + timedelta(hours=1))
    scheduled = (await globex.enqueue(later)).task_id
    for task_id in (waiting, scheduled, running, MISSING):
        with pytest.raises(TaskNotFound):
            await acme.cancel(task_id)
    assert (await globex.get_task(waiting)).state is TaskState.QUEUED
    assert (await globex.get_task(scheduled)).state is TaskState.SCHEDULED
    beat = await store.heartbeat("w1", [lease(claimed)], 30.0)
    assert beat.cancel_requested == frozenset()  # no stop request reached its worker
    assert await globex.cancel(waiting) is TaskState.CANCELLED
    assert await globex.cancel(running) is TaskState.RUNNING


async def test_a_list_holds_only_the_tenants_own_tasks(
    store: PostgresStore, acme: TenantStore, globex: TenantStore
) -> None:
    mine = [r.task_id for r in await acme.enqueue_batch([NewTask("q", {"n": i}) for i in range(3)])]
    theirs = [r.task_id for r in await globex.enqueue_batch([NewTask("q") for _ in range(4)])]
    [first] = await claim(store, limit=1)  # acme's first task runs, then finishes
    await store.finish([Finish(lease(first), TaskState.SUCCEEDED)])
    listed = await acme.list_tasks()
    assert [t.id for t in listed] == sorted(mine, reverse=True)  # newest first
    assert {t.tenant_id for t in listed} == {"acme"}
    assert not {t.id for t in listed} & set(theirs)
    assert {t.id for t in await globex.list_tasks()} == set(theirs)


async def test_a_list_pages_and_filters(acme: TenantStore) -> None:
    ids = [r.task_id for r in await acme.enqueue_batch([NewTask("q") for _ in range(5)])]
    await acme.enqueue(NewTask("other", group_id="camp"))
    page = await acme.list_tasks(TaskListParams(limit=2, queue="q"))
    assert [t.id for t in page] == [ids[4], ids[3]]
    rest = await acme.list_tasks(TaskListParams(queue="q", before_id=page[-1].id))
    assert [t.id for t in rest] == [ids[2], ids[1], ids[0]]
    [grouped] = await acme.list_tasks(TaskListParams(group_id="camp"))
    assert grouped.queue == "other"
    assert len(await acme.list_tasks(TaskListParams(state=TaskState.QUEUED))) == 6
    assert await acme.list_tasks(TaskListParams(state=TaskState.DEAD)) == []


async def test_another_tenants_group_is_not_found(acme: TenantStore, globex: TenantStore) -> None:
    await globex.create_group("launch")
    await globex.enqueue(NewTask("q", group_id="launch"))
    assert (await globex.group_status("launch")).total == 1
    for group_id in ("launch", "no-such-group"):
        with pytest.raises(GroupNotFound):
            await acme.group_status(group_id)


async def test_enqueue_is_bound_to_the_views_tenant(
    store: PostgresStore, acme: TenantStore
) -> None:
    unnamed = await acme.enqueue(NewTask("q"))  # names no tenant: it is acme's
    assert (await store.get_task(unnamed.task_id)).tenant_id == "acme"
    named = await acme.enqueue(NewTask("q", tenant_id="acme"))
    assert (await store.get_task(named.task_id)).tenant_id == "acme"
    with pytest.raises(InvalidTask, match="bound to tenant 'acme'"):
        await acme.enqueue_batch([NewTask("q"), NewTask("q", tenant_id="globex")])
    assert len(await acme.list_tasks()) == 2  # the refused batch enqueued nothing


async def test_a_groups_follow_up_is_bound_to_the_views_tenant(acme: TenantStore) -> None:
    with pytest.raises(InvalidTask):
        await acme.create_group("g", on_complete=NewTask("report", tenant_id="globex"))
    await acme.create_group("g", on_complete=NewTask("report"))
    assert (await acme.group_status("g")).total == 0


async def test_operators_still_reach_any_tenant(store: PostgresStore, globex: TenantStore) -> None:
    theirs = (await globex.enqueue(NewTask("q"))).task_id
    assert (await store.get_task(theirs)).tenant_id == "globex"
    with pytest.raises(TaskNotFound):
        await store.get_task(theirs, tenant_id="acme")
    assert await store.cancel(theirs) is TaskState.CANCELLED


async def test_enqueue_in_the_callers_transaction_commits_with_it(acme: TenantStore) -> None:
    async with acme.transaction() as conn:
        await acme.enqueue(NewTask("q"), connection=conn)
        assert await acme.list_tasks() == []  # not committed yet: another connection reads
    [task] = await acme.list_tasks()
    assert task.tenant_id == "acme"
