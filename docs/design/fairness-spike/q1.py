"""Q1: WFQ enqueue cost and the flood line-up, in a scratch database (dropped at the end)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import asyncpg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import variants as v  # noqa: E402
import wfq  # noqa: E402
from bench import SERVER, admin, create_db  # noqa: E402

Q = "copywriter"


async def ids(conn, n):
    return await conn.fetchval(
        "SELECT array_agg(nextval('task_id_seq')) FROM generate_series(1, $1::int)", n)


async def enqueue_uniform(conn, sql, tenant, n, priority=5):
    payloads = json.dumps([{"i": i} for i in range(n)])
    await conn.execute(sql, await ids(conn, n), tenant, Q, priority, payloads)


async def reset(conn):
    await conn.execute("TRUNCATE tasks, tenant_clocks, queue_clocks")
    await conn.execute("VACUUM ANALYZE tasks")


async def main() -> None:
    name = f"fairness_spike_q1_{uuid.uuid4().hex[:6]}"
    dsn = await create_db(name, "")
    out: dict = {}
    try:
        conn = await asyncpg.connect(dsn)
        tenants = ["A"] + [chr(c) for c in range(ord("B"), ord("L") + 1)]
        await conn.executemany("INSERT INTO tenants (id, name) VALUES ($1, $1)",
                               [(t,) for t in tenants])

        # --- enqueue cost: uniform batches of 10,000 (100,000 tasks) ---------------------
        for label, sql in (("plain", wfq.ENQUEUE_UNIFORM_PLAIN), ("wfq", wfq.ENQUEUE_UNIFORM_WFQ)) * 3:
            await reset(conn)
            t0 = time.perf_counter()
            for _ in range(10):
                async with conn.transaction():
                    await enqueue_uniform(conn, sql, "A", 10_000)
            dt = time.perf_counter() - t0
            out.setdefault(f"uniform10k_{label}_tasks_per_s", []).append(round(100_000 / dt))

        # --- enqueue cost: one task per transaction, one client, 2,000 transactions -------
        for label, sql in (("plain", wfq.ENQUEUE_UNIFORM_PLAIN), ("wfq", wfq.ENQUEUE_UNIFORM_WFQ)) * 2:
            await reset(conn)
            t0 = time.perf_counter()
            for k in range(2000):
                async with conn.transaction():
                    await enqueue_uniform(conn, sql, tenants[k % len(tenants)], 1)
            dt = time.perf_counter() - t0
            out.setdefault(f"single_{label}_ms_per_txn", []).append(round(1000 * dt / 2000, 3))

        # --- single-task transactions from 8 clients: same tenant vs spread tenants -------
        async def client(sql, tenant_of, count):
            c = await asyncpg.connect(dsn)
            try:
                for k in range(count):
                    async with c.transaction():
                        await enqueue_uniform(c, sql, tenant_of(k), 1)
            finally:
                await c.close()

        for label, sql in (("plain", wfq.ENQUEUE_UNIFORM_PLAIN), ("wfq", wfq.ENQUEUE_UNIFORM_WFQ)):
            for who, fn in (("same_tenant", lambda i: (lambda k: "A")),
                            ("12_tenants", lambda i: (lambda k: tenants[(i + k) % len(tenants)]))):
                await reset(conn)
                t0 = time.perf_counter()
                await asyncio.gather(*(client(sql, fn(i), 500) for i in range(8)))
                dt = time.perf_counter() - t0
                out[f"8clients_{who}_{label}_txn_per_s"] = round(4000 / dt)

        # --- mixed batches: 1,000 tasks over 100 tenants per statement ---------------------
        many = [f"m{i:03d}" for i in range(100)]
        await conn.executemany("INSERT INTO tenants (id, name) VALUES ($1, $1)",
                               [(t,) for t in many])
        for label, sql in (("plain", wfq.ENQUEUE_MIXED_PLAIN), ("wfq", wfq.ENQUEUE_MIXED_WFQ)) * 2:
            await reset(conn)
            t0 = time.perf_counter()
            for _ in range(50):
                idl = await ids(conn, 1000)
                rows = [{"id": i, "tenant_id": many[k % 100], "queue": Q, "priority": 5,
                         "payload": {"k": k}} for k, i in enumerate(idl)]
                async with conn.transaction():
                    await conn.execute(sql, json.dumps(rows))
            dt = time.perf_counter() - t0
            out.setdefault(f"mixed1k_100tenants_{label}_tasks_per_s", []).append(round(50_000 / dt))

        # --- the flood: A submits 100,000, then B..K submit 10 each ---------------------
        rank_sql = """
            SELECT tenant_id, min(r) AS first, max(r) AS last, count(*) AS n FROM (
                SELECT tenant_id, row_number() OVER (ORDER BY priority, fairness_key, id) AS r
                FROM tasks WHERE queue = $1 AND state = 'queued') AS x
            GROUP BY tenant_id ORDER BY min(r)"""
        for label, sql in (("fifo", wfq.ENQUEUE_UNIFORM_PLAIN), ("wfq", wfq.ENQUEUE_UNIFORM_WFQ)):
            await reset(conn)
            for _ in range(10):
                await enqueue_uniform(conn, sql, "A", 10_000)
            for t in tenants[1:11]:
                await enqueue_uniform(conn, sql, t, 10)
            await conn.execute("ANALYZE tasks")
            ranks = [dict(r) for r in await conn.fetch(rank_sql, Q)]
            out[f"flood_{label}_ranks"] = ranks
            plan = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) " + v.CLAIM_PLAIN_VT.replace(
                    "$1", "'copywriter'").replace("$2", "100").replace("$3", "'w'").replace(
                    "$4", "30").replace("$5::int", "400").replace("$6", "3"))
            out[f"flood_{label}_first_claim_plan"] = [r[0] for r in plan]
            claimed = await conn.fetch(
                "SELECT tenant_id, count(*) FROM tasks WHERE state = 'running' GROUP BY 1 ORDER BY 1")
            out[f"flood_{label}_first_claim_tenants"] = {r[0]: r[1] for r in claimed}

        # --- later arrival: after 20,000 of A's tasks ran, L submits 10 -------------------
        # (continues the wfq state above; claims advance the queue's virtual time)
        for _ in range(200):
            rows = await conn.fetch(v.CLAIM_PLAIN_VT, Q, 100, "w", 30.0, 400, 3)
            nulls = json.dumps([None] * len(rows))
            await conn.fetch(v.FINISH_BASELINE, [r["id"] for r in rows],
                             [r["lease_token"] for r in rows], ["succeeded"] * len(rows),
                             nulls, nulls)
        out["after_20k_vtime"] = await conn.fetchval(
            "SELECT vtime FROM queue_clocks WHERE queue = $1 AND priority = 5", Q)
        await enqueue_uniform(conn, wfq.ENQUEUE_UNIFORM_WFQ, "L", 10)
        # B re-submits too: its clock (10) is behind vtime, so it restarts at vtime
        await enqueue_uniform(conn, wfq.ENQUEUE_UNIFORM_WFQ, "B", 10)
        out["after_20k_ranks"] = [dict(r) for r in await conn.fetch(rank_sql, Q)]
        out["clocks"] = [dict(r) for r in await conn.fetch(
            "SELECT tenant_id, clock FROM tenant_clocks ORDER BY clock DESC LIMIT 5")]
        await conn.close()
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(out, indent=1, default=str))
    (HERE / "q1_result.json").write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    asyncio.run(main())
