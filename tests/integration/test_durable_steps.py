"""Durable steps, exactly-once effects and child tasks, through a real worker."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from conveyor import App, RetryPolicy, TaskContext
from conveyor.app import CallNext, StepInfo, TaskHook
from conveyor.store.params import ClaimRequest, EffectOwner, Finish, LeaseRef, NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import EffectStatus
from conveyor.types import TaskState
from tests.integration.worker_harness import running, settle

FAST = RetryPolicy(max_attempts=3, base=0.01, cap=0.05)


async def test_a_retried_task_resumes_after_its_completed_steps(store: PostgresStore) -> None:
    calls: Counter[str] = Counter()

    async def llm_call(name: str) -> str:
        calls[name] += 1
        return f"{name}-output"

    async def agent(ctx: TaskContext, payload: dict[str, Any]) -> list[str]:
        outputs = [await ctx.step(f"call-{i}", llm_call, f"call-{i}") for i in (1, 2, 3)]
        if ctx.task.attempt == 1:
            raise ConnectionError("worker lost the provider after three calls")
        outputs.append(await ctx.step("call-4", llm_call, "call-4"))
        return outputs

    app = App("steps")
    app.agent("work", retry=FAST)(agent)
    result = await store.enqueue(NewTask("work"))
    async with running(app, store):
        record = await settle(store, result.task_id)
    assert record.state is TaskState.SUCCEEDED and record.attempts == 2
    assert record.result == ["call-1-output", "call-2-output", "call-3-output", "call-4-output"]
    assert calls == {"call-1": 1, "call-2": 1, "call-3": 1, "call-4": 1}


async def test_once_runs_an_effect_once_per_key_across_tasks(store: PostgresStore) -> None:
    sent: list[str] = []

    def send_email(to: str) -> dict[str, str]:
        sent.append(to)
        return {"message_id": f"m-{len(sent)}"}

    async def agent(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, str]:
        receipt = await ctx.once(f"welcome:{payload['user']}", send_email, payload["user"])
        if ctx.task.attempt == 1 and payload.get("fail_first"):
            raise ConnectionError("crashed after sending")
        return receipt

    app = App("once")
    app.agent("work", retry=FAST)(agent)
    first = await store.enqueue(NewTask("work", {"user": "ada", "fail_first": True}))
    second = await store.enqueue(NewTask("work", {"user": "ada"}))
    async with running(app, store):
        a = await settle(store, first.task_id)
        b = await settle(store, second.task_id)
    assert sent == ["ada"]
    assert a.result == b.result == {"message_id": "m-1"}


async def test_two_calls_of_one_run_with_the_same_key_run_the_effect_once(
    store: PostgresStore,
) -> None:
    charged: list[int] = []

    async def charge() -> dict[str, int]:
        charged.append(1)
        await asyncio.sleep(0.05)  # the second call arrives while the first one runs
        return {"charge": len(charged)}

    async def agent(ctx: TaskContext, payload: dict[str, Any]) -> list[dict[str, int]]:
        return list(await asyncio.gather(ctx.once("charge", charge), ctx.once("charge", charge)))

    app = App("once-twice")
    app.agent("work", retry=FAST)(agent)
    task = await store.enqueue(NewTask("work"))
    async with running(app, store):
        done = await settle(store, task.task_id)
    assert charged == [1]
    assert done.result == [{"charge": 1}, {"charge": 1}]


async def test_spawned_children_are_linked_and_not_duplicated_on_retry(
    store: PostgresStore,
) -> None:
    async def planner(ctx: TaskContext, payload: dict[str, Any]) -> list[int]:
        ids = [await ctx.spawn("writer", {"part": i}, priority=1) for i in range(3)]
        if ctx.task.attempt == 1:
            raise ConnectionError("planner crashed after spawning")
        return ids

    async def writer(ctx: TaskContext, payload: dict[str, Any]) -> int:
        return int(payload["part"])

    app = App("spawn")
    app.agent("planner", retry=FAST)(planner)
    app.agent("writer")(writer)
    await store.create_tenant("acme")
    parent = await store.enqueue(NewTask("planner", tenant_id="acme", group_id="campaign-1"))
    async with running(app, store):
        record = await settle(store, parent.task_id)
        children = [await settle(store, child) for child in record.result]
    assert record.attempts == 2 and len(set(record.result)) == 3
    assert all(c.parent_id == parent.task_id for c in children)
    assert {(c.tenant_id, c.group_id, c.priority) for c in children} == {("acme", "campaign-1", 1)}
    assert sorted(c.result for c in children) == [0, 1, 2]
    # three children in all: the retry's spawns found the first run's
    statuses = await store.queue_status()
    assert all(s.queued + s.running == 0 for s in statuses)


async def test_ledger_results_survive_a_new_store(store: PostgresStore, database_dsn: str) -> None:
    recorded, wrote = await store.record_effect("default", "k", {"v": 1}, task_id=None)
    again, wrote_again = await store.record_effect("default", "k", {"v": 2}, task_id=None)
    assert wrote and not wrote_again and again.result == recorded.result == {"v": 1}
    other = await PostgresStore.open(database_dsn)
    try:
        found = await other.get_effect("default", "k")
    finally:
        await other.close()
    assert found is not None and found.result == {"v": 1}


async def test_a_key_held_by_a_vanished_lease_is_taken_over(store: PostgresStore) -> None:
    await store.enqueue(NewTask("work"))
    [claimed] = await store.claim(ClaimRequest(("work",), 1, "w1", 30))
    first = EffectOwner("default", "once:charge", claimed.id, claimed.lease_token)
    assert (await store.begin_effect(first)).status is EffectStatus.OWNED
    # the same lease asking again still owns it; another running lease would have to wait
    assert (await store.begin_effect(first)).status is EffectStatus.OWNED

    # the owner's task is handed back (its worker stopped): the key is free to take over
    await store.release([LeaseRef(claimed.id, claimed.lease_token)])
    [again] = await store.claim(ClaimRequest(("work",), 1, "w2", 30))
    second = EffectOwner("default", "once:charge", again.id, again.lease_token)
    assert (await store.begin_effect(second)).status is EffectStatus.OWNED
    done = await store.complete_effect(second, {"charged": True})
    assert done.result == {"charged": True}
    # the zombie first owner can no longer record a different result
    late = await store.complete_effect(first, {"charged": "twice"})
    assert late.result == {"charged": True}
    assert (await store.begin_effect(first)).status is EffectStatus.DONE


async def test_list_results_round_trip(store: PostgresStore) -> None:
    await store.enqueue(NewTask("work"))
    [claimed] = await store.claim(ClaimRequest(("work",), 1, "w", 30))
    lease = LeaseRef(claimed.id, claimed.lease_token)
    await store.finish([Finish(lease, TaskState.SUCCEEDED, [[1, 2], ["a"], []])])
    assert (await store.get_task(claimed.id)).result == [[1, 2], ["a"], []]


async def test_a_step_whose_result_is_not_json_fails_for_good(store: PostgresStore) -> None:
    async def agent(ctx: TaskContext, payload: dict[str, Any]) -> None:
        await ctx.step("bad", lambda: object())

    app = App("bad-step")
    app.agent("work", retry=FAST)(agent)
    result = await store.enqueue(NewTask("work"))
    async with running(app, store):
        record = await settle(store, result.task_id)
    assert record.state is TaskState.DEAD and record.attempts == 1
    assert "must be JSON" in record.last_error["message"]


async def test_step_hooks_wrap_each_step_and_effect_and_see_what_was_replayed(
    store: PostgresStore,
) -> None:
    seen: list[tuple[int, str, str, bool, Any]] = []

    class Steps(TaskHook):
        async def around_step(self, ctx: TaskContext, step: StepInfo, call_next: CallNext) -> Any:
            result = await call_next()
            seen.append((ctx.task.attempt, step.kind, step.name, step.replayed, result))
            return result

    async def agent(ctx: TaskContext, payload: dict[str, Any]) -> str:
        await ctx.step("draft", lambda: "text")
        await ctx.once("notify", lambda: {"sent": True})
        await ctx.once_in_transaction("count", lambda conn: conn.fetchval("SELECT 1"))
        if ctx.task.attempt == 1:
            raise ConnectionError("fails after its steps")
        return "done"

    app = App("hooked-steps", hooks=[Steps()])
    app.agent("work", retry=FAST)(agent)
    made = await store.enqueue(NewTask("work"))
    async with running(app, store):
        record = await settle(store, made.task_id)
    assert record.state is TaskState.SUCCEEDED and record.attempts == 2
    assert seen == [
        (1, "step", "draft", False, "text"),
        (1, "once", "notify", False, {"sent": True}),
        (1, "once_in_transaction", "count", False, 1),
        (2, "step", "draft", True, "text"),
        (2, "once", "notify", True, {"sent": True}),
        (2, "once_in_transaction", "count", True, 1),
    ]
