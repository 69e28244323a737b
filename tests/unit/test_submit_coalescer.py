"""The API's submit coalescer: concurrent submits of a tenant share one enqueue, each
caller gets its own answer, and a failing task fails only its own caller."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from conveyor.api.coalesce import SubmitCoalescer
from conveyor.errors import DatabaseUnavailable, InvalidTask
from conveyor.store.params import NewTask
from conveyor.store.records import EnqueueResult


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []

    async def enqueue(self, tenant: str, tasks: Sequence[NewTask]) -> list[EnqueueResult]:
        self.calls.append((tenant, [t.payload["n"] for t in tasks]))
        if any(t.payload["n"] < 0 for t in tasks):
            raise InvalidTask("negative")
        return [EnqueueResult(1000 + t.payload["n"], True) for t in tasks]


def task(tenant: str, n: int) -> NewTask:
    return NewTask(queue="q", payload={"n": n}, tenant_id=tenant)


async def test_concurrent_submits_share_one_enqueue_per_tenant() -> None:
    recorder = Recorder()
    coalescer = SubmitCoalescer(recorder.enqueue, window=0.01)
    results = await asyncio.gather(
        *(coalescer.submit(t, task(t, n)) for n in range(5) for t in ("a", "b"))
    )
    assert [r.task_id for r in results] == [1000 + n for n in range(5) for _ in "ab"]
    assert sorted(recorder.calls) == [("a", [0, 1, 2, 3, 4]), ("b", [0, 1, 2, 3, 4])]


async def test_a_failing_task_fails_only_its_own_caller() -> None:
    recorder = Recorder()
    coalescer = SubmitCoalescer(recorder.enqueue, window=0.01)
    outcomes = await asyncio.gather(
        *(coalescer.submit("a", task("a", n)) for n in (1, -1, 2)), return_exceptions=True
    )
    assert isinstance(outcomes[1], InvalidTask)
    assert [o.task_id for o in outcomes if isinstance(o, EnqueueResult)] == [1001, 1002]
    assert recorder.calls == [("a", [1, -1, 2]), ("a", [1]), ("a", [-1]), ("a", [2])]


async def test_a_full_batch_goes_at_once_and_no_window_means_alone() -> None:
    recorder = Recorder()
    coalescer = SubmitCoalescer(recorder.enqueue, window=10.0, max_items=3)
    await asyncio.wait_for(
        asyncio.gather(*(coalescer.submit("a", task("a", n)) for n in range(3))), timeout=1
    )
    assert recorder.calls == [("a", [0, 1, 2])]
    alone = SubmitCoalescer(recorder.enqueue, window=0)
    assert (await alone.submit("a", task("a", 7))).task_id == 1007
    with pytest.raises(InvalidTask):
        await alone.submit("a", task("a", -7))


async def test_a_database_failure_fails_every_caller_and_writes_nothing_again() -> None:
    calls: list[list[int]] = []

    async def lost(tenant: str, tasks: Sequence[NewTask]) -> list[EnqueueResult]:
        calls.append([t.payload["n"] for t in tasks])
        raise DatabaseUnavailable("lost the connection during COMMIT")  # committed? unknown

    coalescer = SubmitCoalescer(lost, window=0.01)
    outcomes = await asyncio.gather(
        *(coalescer.submit("a", task("a", n)) for n in (1, 2, 3)), return_exceptions=True
    )
    assert all(isinstance(o, DatabaseUnavailable) for o in outcomes)
    assert calls == [[1, 2, 3]]  # not written again one by one: that could store them twice
