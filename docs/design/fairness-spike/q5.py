"""Q5: the committed head-key virtual time (fairness.sql at f1bf29f) vs the spike's
claim-advanced, per-priority virtual time, on two situations built by SQL:

1. priority: X has 10,000 p10 tasks queued; Y and Z submit 100 p1 tasks each; then X
   submits one p1 task. Rank of X's p1 task among the p1 tasks.
2. capped head: A has 1,000 tasks; B has 5,000; both at weight 1. A is capped, so only B is
   served: 2,000 of B's tasks run. Then C submits 1,000 tasks. How many of C's tasks sort
   ahead of B's next task?
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid
from pathlib import Path

import asyncpg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import wfq  # noqa: E402
from bench import admin, create_db  # noqa: E402

REPO_FAIRNESS = Path("/work/main/conveyor/store/queries/fairness.sql").read_text()
ADVANCE = re.split(r"^-- name: ", REPO_FAIRNESS, flags=re.M)[1].partition("\n")[2].strip().rstrip(";")
Q = "copywriter"
DDL = """
CREATE TABLE fairness_clocks (queue text NOT NULL, tenant_id text NOT NULL,
    clock double precision NOT NULL, span double precision NOT NULL,
    PRIMARY KEY (queue, tenant_id));
"""


async def committed_enqueue(c, tenant, n, priority):
    start = (await c.fetchrow(ADVANCE, [Q], [tenant], [float(n)]))["start"]
    await c.execute(
        """INSERT INTO tasks (id, tenant_id, queue, state, priority, fairness_key)
           SELECT nextval('task_id_seq'), $1, $2, 'queued', $3, $4 + g
           FROM generate_series(1, $5::int) AS g""", tenant, Q, priority, start, n)


async def spike_enqueue(c, tenant, n, priority):
    idl = await c.fetchval("SELECT array_agg(nextval('task_id_seq')) FROM generate_series(1, $1::int)", n)
    await c.execute(wfq.ENQUEUE_UNIFORM_WFQ, idl, tenant, Q, priority, json.dumps([{}] * n))


async def serve(c, tenant, k, spike):
    """Claim k of `tenant`'s tasks in claim order (others are skipped, as a cap would) and
    finish them; with the spike design the queue's vtime advances to the max key claimed."""
    rows = await c.fetch(
        """DELETE FROM tasks WHERE id IN (
               SELECT id FROM tasks WHERE queue = $1 AND state = 'queued' AND tenant_id = $2
               ORDER BY priority, fairness_key, id LIMIT $3)
           RETURNING priority, fairness_key""", Q, tenant, k)
    if spike and rows:
        await c.execute(
            """UPDATE queue_clocks SET vtime = greatest(vtime, $3)
               WHERE queue = $1 AND priority = $2""", Q, rows[0]["priority"],
            max(r["fairness_key"] for r in rows))


async def case(spike: bool) -> dict:
    name = f"fairness_spike_q5_{uuid.uuid4().hex[:6]}"
    dsn = await create_db(name, DDL)
    enq = spike_enqueue if spike else committed_enqueue
    out = {}
    try:
        c = await asyncpg.connect(dsn)
        await c.executemany("INSERT INTO tenants (id, name) VALUES ($1, $1)",
                            [(t,) for t in "XYZABC"])
        # 1. priority
        await enq(c, "X", 10_000, 10)
        await enq(c, "Y", 100, 1)
        await enq(c, "Z", 100, 1)
        await enq(c, "X", 1, 1)
        out["x_p1_rank_among_201_p1"] = await c.fetchval(
            """SELECT r FROM (SELECT tenant_id, row_number() OVER (
                   ORDER BY priority, fairness_key, id) AS r
               FROM tasks WHERE queue = $1 AND state = 'queued' AND priority = 1) AS x
               WHERE tenant_id = 'X'""", Q)
        # Y and Z keep submitting p1 work: how much of it goes before X's task?
        await enq(c, "Y", 10_000, 1)
        await enq(c, "Z", 10_000, 1)
        out["x_p1_rank_after_20k_more_p1"] = await c.fetchval(
            """SELECT r FROM (SELECT tenant_id, row_number() OVER (
                   ORDER BY priority, fairness_key, id) AS r
               FROM tasks WHERE queue = $1 AND state = 'queued' AND priority = 1) AS x
               WHERE tenant_id = 'X'""", Q)
        await c.execute("TRUNCATE tasks, tenant_clocks, queue_clocks, fairness_clocks")
        # 2. capped head
        await enq(c, "A", 1_000, 5)
        await enq(c, "B", 5_000, 5)
        for _ in range(20):
            await serve(c, "B", 100, spike)  # A is at its cap: only B runs
        await enq(c, "C", 1_000, 5)
        out["c_tasks_ahead_of_b_next"] = await c.fetchval(
            """SELECT count(*) FROM tasks WHERE queue = $1 AND tenant_id = 'C'
               AND (priority, fairness_key, id) < (
                   SELECT priority, fairness_key, id FROM tasks
                   WHERE queue = $1 AND tenant_id = 'B'
                   ORDER BY priority, fairness_key, id LIMIT 1)""", Q)
        await c.close()
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return out


async def main():
    res = {"committed_head_key_vtime": await case(False),
           "spike_claim_advanced_vtime_per_priority": await case(True)}
    print(json.dumps(res, indent=1))


asyncio.run(main())
