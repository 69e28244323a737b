from conveyor.store.params import ClaimRequest, Finish, LeaseRef, NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState


async def test_enqueue_claim_finish(store: PostgresStore) -> None:
    results = await store.enqueue_batch([NewTask(queue="copywriter", payload={"n": i}) for i in range(3)])
    assert [r.created for r in results] == [True] * 3
    claimed = await store.claim(ClaimRequest(("copywriter",), 10, "w1", 30))
    assert [c.id for c in claimed] == [r.task_id for r in results]
    refused = await store.finish(
        [Finish(LeaseRef(c.id, c.lease_token), TaskState.SUCCEEDED, {"ok": c.payload["n"]}) for c in claimed]
    )
    assert refused == set()
    record = await store.get_task(results[0].task_id)
    assert record.state is TaskState.SUCCEEDED and record.result == {"ok": 0}
