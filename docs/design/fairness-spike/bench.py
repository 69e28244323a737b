"""Claim+complete throughput of the fairness variants, with a cap checker sampling meanwhile.

python bench.py VARIANT [--keys wfq|fifo] [--claimers 4] [--batch 100] [--scan 400]
                        [--scenario mix|race|clog] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path

import asyncpg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import variants as v  # noqa: E402
import final  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432/"
Q = "copywriter"


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(SERVER + "postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


VARIANTS = {
    # name: (claim sql, style, finish sql, extra ddl)
    "baseline": (v.CLAIM_BASELINE, "repo", v.FINISH_BASELINE, ""),
    "plain_vt": (v.CLAIM_PLAIN_VT, "one", v.FINISH_BASELINE, ""),
    "counters": (v.CLAIM_COUNTERS, "one", v.FINISH_COUNTERS, ""),
    "counters_rate": (v.CLAIM_COUNTERS_RATE, "one", v.FINISH_COUNTERS, ""),
    "counters_pick": (v.CLAIM_COUNTERS_PICK, "one", v.FINISH_COUNTERS, ""),
    "counters_scanlock": (v.CLAIM_COUNTERS_SCANLOCK, "one", v.FINISH_COUNTERS, ""),
    "adv_fn2": (v.CLAIM_ADVISORY_FN2, "one", v.FINISH_BASELINE,
                v.RUNNING_INDEX + ";\n" + v.CLAIM_ADVISORY_FN2_DDL),
    "fair_fn": (final.CLAIM_FAIR, "one", v.FINISH_BASELINE, final.FAIR_DDL),
    "fair_w": (final.CLAIM_FAIR_W, "one", v.FINISH_BASELINE, final.FAIR_DDL + final.FAIR_W_DDL),
    "adv_one": (v.CLAIM_ADVISORY_ONE, "one", v.FINISH_BASELINE, v.RUNNING_INDEX),
    "adv_fn": (v.CLAIM_ADVISORY_FN, "one", v.FINISH_BASELINE,
               v.RUNNING_INDEX + ";\n" + v.CLAIM_ADVISORY_FN_DDL),
}


async def create_db(name: str, extra_ddl: str) -> str:
    await admin(f'CREATE DATABASE "{name}"')
    dsn = SERVER + name
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute((HERE / "0001_initial.sql").read_text())
        await conn.execute((HERE / "spike_schema.sql").read_text())
        await conn.execute("SELECT conveyor_ensure_month_partition('task_history', current_date)")
        await conn.execute(
            "SELECT conveyor_ensure_month_partition('task_history', "
            "(current_date + interval '1 month')::date)"
        )
        if extra_ddl:
            await conn.execute(extra_ddl)
    finally:
        await conn.close()
    return dsn


async def seed(conn: asyncpg.Connection, scenario: str, keys: str) -> dict:
    """Tenants, caps, counters and queued tasks, inserted by SQL (keys as WFQ would give)."""
    if scenario == "mix":
        groups = [("A", 50_000, 4)] + [(f"t{i:03d}", 100, 2) for i in range(100)]
    elif scenario == "race":  # many claimers fighting over cap-1 tenants
        groups = [(f"r{i:02d}", 2_000, 1) for i in range(20)]
    elif scenario == "wide":  # 2,000 tenants x 50 tasks, cap 2: caps bind per tenant only
        groups = [(f"w{i:04d}", 50, 2) for i in range(2000)]
    elif scenario == "rate":  # 200 tenants x 200, 20 starts/s burst 5; A 20k at 200/s burst 20
        groups = [("A", 20_000, 1000)] + [(f"r{i:03d}", 200, 1000) for i in range(200)]
    elif scenario == "nocap":  # same data as mix, caps far above what runs
        groups = [("A", 50_000, 10_000)] + [(f"t{i:03d}", 100, 10_000) for i in range(100)]
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    await conn.executemany(
        "INSERT INTO tenants (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING",
        [(g[0],) for g in groups],
    )
    await conn.executemany(
        "INSERT INTO tenant_caps (queue, tenant_id, cap) VALUES ($1, $2, $3)",
        [(Q, t, cap) for t, _, cap in groups],
    )
    await conn.executemany(
        "INSERT INTO tenant_running (queue, tenant_id, cap) VALUES ($1, $2, $3)",
        [(Q, t, cap) for t, _, cap in groups],
    )
    await conn.execute("INSERT INTO queue_clocks (queue, priority) VALUES ($1, 5)", Q)
    if scenario == "rate":
        rates = [(Q, t, 1 / 200 if t == "A" else 1 / 20, 20 if t == "A" else 5)
                 for t, _, _ in groups]
        await conn.executemany(
            "UPDATE tenant_running SET rate_interval = $3, rate_burst = $4"
            " WHERE queue = $1 AND tenant_id = $2", rates)
        if await conn.fetchval("SELECT to_regclass('tenant_rate') IS NOT NULL"):
            await conn.executemany(
                "INSERT INTO tenant_rate (queue, tenant_id, rate_interval, rate_burst)"
                " VALUES ($1, $2, $3, $4)", rates)
    # ids in submission order: groups in list order (A first), each group's tasks in order
    for tenant, count, _ in groups:
        await conn.execute(
            """
            INSERT INTO tasks (id, tenant_id, queue, state, priority, fairness_key, payload)
            SELECT nextval('task_id_seq'), $1, $2, 'queued', 5,
                   CASE WHEN $4 THEN g::float8 ELSE 0 END, jsonb_build_object('i', g)
            FROM generate_series(1, $3::int) AS g
            """,
            tenant, Q, count, keys == "wfq",
        )
    await conn.execute("VACUUM ANALYZE")
    return {"groups": len(groups), "tasks": sum(g[1] for g in groups),
            "small": sum(g[1] for g in groups if g[0] != "A")}


async def run(args: argparse.Namespace) -> dict:
    claim_sql, style, finish_sql, ddl = VARIANTS[args.variant]
    name = f"fairness_spike_{args.variant}_{uuid.uuid4().hex[:6]}"
    dsn = await create_db(name, ddl)
    try:
        setup = await asyncpg.connect(dsn)
        facts = await seed(setup, args.scenario, args.keys)
        await setup.execute("CHECKPOINT")
        lsn0 = await setup.fetchval("SELECT pg_current_wal_lsn()")
        total = facts["tasks"]
        small_total = facts["small"]
        state = {"done": 0, "claims": 0, "empty": 0, "claimed": 0, "deadlocks": 0,
                 "small_done_at": None, "small_done": 0}
        stop = asyncio.Event()

        async def claimer(i: int) -> None:
            conn = await asyncpg.connect(dsn)
            worker = f"w{i}"
            try:
                while state["done"] < total:
                    if time.perf_counter() - t0 > args.timeout:
                        state["timed_out"] = True
                        break
                    tc = time.perf_counter()
                    if style == "repo":
                        rows = await conn.fetch(claim_sql, [Q], args.batch, worker, 30.0, [3])
                    else:
                        rows = await conn.fetch(
                            claim_sql, Q, args.batch, worker, 30.0, args.scan, 3)
                    state["claims"] += 1
                    state["claim_s"] = state.get("claim_s", 0) + time.perf_counter() - tc
                    if not rows:
                        state["empty"] += 1
                        await asyncio.sleep(0.0005)
                        continue
                    state["claimed"] += len(rows)
                    ids = [r["id"] for r in rows]
                    toks = [r["lease_token"] for r in rows]
                    nulls = json.dumps([None] * len(rows))
                    if args.hold_ms:
                        await asyncio.sleep(random.uniform(0, args.hold_ms) / 1000)
                    tf = time.perf_counter()
                    while True:
                        try:
                            out = await conn.fetch(
                                finish_sql, ids, toks, ["succeeded"] * len(rows), nulls, nulls)
                            break
                        except asyncpg.DeadlockDetectedError:
                            state["deadlocks"] += 1
                    state["finish_s"] = state.get("finish_s", 0) + time.perf_counter() - tf
                    state["finishes"] = state.get("finishes", 0) + 1
                    state["done"] += len(out)
                    small = sum(1 for r in rows if r["tenant_id"] != "A")
                    state["small_done"] += small
                    if state["small_done_at"] is None and state["small_done"] >= small_total:
                        state["small_done_at"] = time.perf_counter()
                        state["done_at_small"] = state["done"]
            finally:
                await conn.close()

        checks = {"samples": 0, "violating_samples": 0, "max_excess": 0,
                  "max_running": 0, "max_A": 0}

        async def sampler() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                while not stop.is_set():
                    row = await conn.fetchrow(
                        """
                        SELECT count(*) FILTER (WHERE x.n > c.cap) AS bad,
                               coalesce(max(x.n - c.cap), 0) AS excess,
                               coalesce(sum(x.n), 0) AS running,
                               coalesce(max(x.n) FILTER (WHERE x.tenant_id = 'A'), 0) AS a
                        FROM (SELECT tenant_id, count(*) AS n FROM tasks
                              WHERE lease_expires_at IS NOT NULL AND queue = $1
                              GROUP BY tenant_id) AS x
                        JOIN tenant_caps AS c ON c.queue = $1 AND c.tenant_id = x.tenant_id
                        """,
                        Q,
                    )
                    checks["samples"] += 1
                    if row["bad"]:
                        checks["violating_samples"] += 1
                    checks["max_excess"] = max(checks["max_excess"], row["excess"])
                    checks["max_running"] = max(checks["max_running"], row["running"])
                    checks["max_A"] = max(checks["max_A"], row["a"])
                    await asyncio.sleep(0.002)
            finally:
                await conn.close()

        async def enqueuer() -> None:
            conn = await asyncpg.connect(dsn)
            tenants = [r["tenant_id"] for r in await conn.fetch(
                "SELECT tenant_id FROM tenant_caps WHERE queue = $1", Q)]
            try:
                while not stop.is_set():
                    await conn.execute(
                        """INSERT INTO tasks (id, tenant_id, queue, state, priority, fairness_key)
                           VALUES (nextval('task_id_seq'), $1, $2, 'queued', 1, 0)""",
                        random.choice(tenants), Q)
                    state["enqueued"] = state.get("enqueued", 0) + 1
                    await asyncio.sleep(0.001)
            finally:
                await conn.close()

        load0 = os.getloadavg()[0]
        sampler_task = asyncio.create_task(sampler()) if args.sample else None
        enq_task = asyncio.create_task(enqueuer()) if args.enqueue_p1 else None
        t0 = time.perf_counter()
        await asyncio.gather(*(claimer(i) for i in range(args.claimers)))
        elapsed = time.perf_counter() - t0
        stop.set()
        if enq_task:
            await enq_task
        if sampler_task:
            await sampler_task
        wal = await setup.fetchval("SELECT pg_current_wal_lsn() - $1::pg_lsn", lsn0)
        await setup.close()
        check = await asyncpg.connect(dsn)
        leftover = await check.fetchval("SELECT count(*) FROM tasks")
        hist = await check.fetchval("SELECT count(*) FROM task_history")
        counters = await check.fetchval("SELECT coalesce(sum(running), 0) FROM tenant_running")
        rate_check = None
        if args.scenario == "rate":
            rate_check = dict(await check.fetchrow(
                """
                WITH s AS (
                    SELECT tenant_id, started_at FROM task_history
                    UNION ALL
                    SELECT tenant_id, started_at FROM tasks WHERE started_at IS NOT NULL
                ), w AS (
                    SELECT tenant_id, started_at,
                           count(*) OVER (PARTITION BY tenant_id ORDER BY started_at
                                          RANGE BETWEEN CURRENT ROW
                                          AND INTERVAL '999.999 milliseconds' FOLLOWING) AS n
                    FROM s
                )
                SELECT count(*) FILTER (WHERE w.n > r.rate_burst + floor(1 / r.rate_interval))
                           AS windows_over,
                       max(w.n - (r.rate_burst + floor(1 / r.rate_interval))) AS max_over,
                       max(w.n) FILTER (WHERE w.tenant_id = 'A') AS a_max_per_1s,
                       max(w.n) FILTER (WHERE w.tenant_id <> 'A') AS other_max_per_1s,
                       count(*) AS windows
                FROM w JOIN tenant_running AS r ON r.queue = $1 AND r.tenant_id = w.tenant_id
                """, Q))
        await check.close()
        return {
            "variant": args.variant, "scenario": args.scenario, "keys": args.keys,
            "claimers": args.claimers, "hold_ms": args.hold_ms, "batch": args.batch, "scan": args.scan,
            "tasks": total, "seconds": round(elapsed, 2),
            "tasks_per_s": round(state["done"] / elapsed),
            "claims": state["claims"], "empty_claims": state["empty"],
            "avg_batch": round(state["claimed"] / max(1, state["claims"] - state["empty"]), 1),
            "small_tenants_done_s": (round(state["small_done_at"] - t0, 2)
                                     if state["small_done_at"] else None),
            "phase1_tasks_per_s": (round(state["done_at_small"] / (state["small_done_at"] - t0))
                                   if state["small_done_at"] else None),
            "done": state["done"],
            "tail_tasks_per_s": (round((state["done"] - state["done_at_small"])
                                       / max(1e-9, elapsed - (state["small_done_at"] - t0)))
                                 if state["small_done_at"] else None),
            "claim_ms": round(1000 * state.get("claim_s", 0) / max(1, state["claims"]), 2),
            "finish_ms": round(1000 * state.get("finish_s", 0) / max(1, state.get("finishes", 0)), 2),
            "deadlocks": state["deadlocks"], **checks,
            "leftover": leftover, "history": hist, "counter_sum_after": counters,
            "load1_before": round(load0, 2),
            "timed_out": state.get("timed_out", False),
            "enqueued_during_run": state.get("enqueued", 0),
            "rate_check": rate_check,
            "wal_bytes_per_task": round(float(wal) / max(1, state["done"])),
        }
    finally:
        if not args.keep:
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("variant", choices=sorted(VARIANTS))
    p.add_argument("--keys", default="wfq", choices=["wfq", "fifo"])
    p.add_argument("--scenario", default="mix")
    p.add_argument("--claimers", type=int, default=4)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--scan", type=int, default=400)
    p.add_argument("--no-sample", dest="sample", action="store_false")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--timeout", type=float, default=240)
    p.add_argument("--hold-ms", type=float, default=0)
    p.add_argument("--enqueue-p1", action="store_true")
    args = p.parse_args()
    result = asyncio.run(run(args))
    result = json.loads(json.dumps(result, default=float))
    print(json.dumps(result))
    with open(HERE / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
