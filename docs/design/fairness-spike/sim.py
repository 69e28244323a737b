"""A short version of issue 4's benchmark, against the spike SQL (not the worker runtime).

Tenant A floods 100,000 tasks; then tenants B..K each submit 10 tasks per second for
--seconds. 4 workers (one connection each, --slots concurrent tasks each) claim, "run" each
task for 20 ms (asyncio.sleep) and finish in group commits. Prints per-tenant wait
(enqueue -> start) p50/p99 and A's throughput.

python sim.py fair|off [--seconds 30] [--slots 16] [--a-cap 4]
  fair: WFQ keys at enqueue + claim_fair (caps: A --a-cap, B..K 2)
  off:  keys 0 (FIFO by id) + the repo's claim_batch, no caps
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import final  # noqa: E402
import variants as v  # noqa: E402
import wfq  # noqa: E402
from bench import admin, create_db  # noqa: E402

Q = "copywriter"
OTHERS = [chr(c) for c in range(ord("B"), ord("K") + 1)]


async def main(args) -> dict:
    fair = args.mode in ("fair", "fair_w")
    name = f"fairness_spike_sim_{uuid.uuid4().hex[:6]}"
    dsn = await create_db(name, (final.FAIR_DDL + final.FAIR_W_DDL) if fair else "")
    enq_sql = wfq.ENQUEUE_UNIFORM_WFQ if fair else wfq.ENQUEUE_UNIFORM_PLAIN
    try:
        c = await asyncpg.connect(dsn)
        await c.executemany("INSERT INTO tenants (id, name) VALUES ($1, $1)",
                            [(t,) for t in ["A", *OTHERS]])
        await c.executemany("INSERT INTO tenant_caps (queue, tenant_id, cap) VALUES ($1, $2, $3)",
                            [(Q, "A", args.a_cap)] + [(Q, t, 2) for t in OTHERS])
        for _ in range(10):
            idl = await c.fetchval(
                "SELECT array_agg(nextval('task_id_seq')) FROM generate_series(1, 10000)")
            await c.execute(enq_sql, idl, "A", Q, 5, json.dumps([{}] * 10000))
        await c.execute("VACUUM ANALYZE")
        await c.execute("CHECKPOINT")
        await c.close()

        stop = asyncio.Event()
        started: dict[str, list[float]] = {}
        busy_samples: list[int] = []
        inflight_total = [0]
        a_started = [0]

        async def worker(i: int) -> None:
            conn = await asyncpg.connect(dsn)
            done: list = []
            inflight = [0]
            lock = asyncio.Lock()

            async def run(row):
                await asyncio.sleep(0.020)
                done.append(row)
                inflight[0] -= 1
                inflight_total[0] -= 1

            try:
                while not stop.is_set():
                    async with lock:
                        if done:
                            batch, done[:] = list(done), []
                            nulls = json.dumps([None] * len(batch))
                            await conn.fetch(v.FINISH_BASELINE, [r["id"] for r in batch],
                                             [r["lease_token"] for r in batch],
                                             ["succeeded"] * len(batch), nulls, nulls)
                        free = args.slots - inflight[0]
                        rows = []
                        if free > 0:
                            if fair:
                                rows = await (conn.fetch(final.CLAIM_FAIR_W, Q, free, f"w{i}", 30.0, args.scan, 3) if args.mode == "fair_w" else conn.fetch(final.CLAIM_FAIR, Q, free, f"w{i}", 30.0, 0, 3))
                            else:
                                rows = await conn.fetch(v.CLAIM_BASELINE, [Q], free, f"w{i}", 30.0, [3])
                    now = time.time()
                    for r in rows:
                        wait = now - r["created_at"].timestamp()
                        started.setdefault(r["tenant_id"], []).append(wait)
                        if r["tenant_id"] == "A":
                            a_started[0] += 1
                        inflight[0] += 1
                        inflight_total[0] += 1
                        asyncio.create_task(run(r))
                    if not rows:
                        await asyncio.sleep(0.005)
            finally:
                await conn.close()

        async def submitter(tenant: str, t_end: float) -> None:
            conn = await asyncpg.connect(dsn)
            try:
                k = 0
                t0 = time.perf_counter()
                while time.perf_counter() < t_end:
                    idl = await conn.fetchval("SELECT array_agg(nextval('task_id_seq')) FROM generate_series(1, 1)")
                    await conn.execute(enq_sql, idl, tenant, Q, 5, json.dumps([{}]))
                    k += 1
                    await asyncio.sleep(max(0, t0 + k * 0.1 - time.perf_counter()))
            finally:
                await conn.close()

        async def sampler():
            while not stop.is_set():
                busy_samples.append(inflight_total[0])
                await asyncio.sleep(0.05)

        workers = [asyncio.create_task(worker(i)) for i in range(4)]
        smp = asyncio.create_task(sampler())
        await asyncio.sleep(1.0)  # A's backlog is there and being worked
        t_end = time.perf_counter() + args.seconds
        a0 = a_started[0]
        t_a0 = time.perf_counter()
        await asyncio.gather(*(submitter(t, t_end) for t in OTHERS))
        a_rate = (a_started[0] - a0) / (time.perf_counter() - t_a0)
        await asyncio.sleep(2.0)  # let the last submissions start
        stop.set()
        await asyncio.gather(*workers, smp)

        def pct(xs, p):
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else None

        others = [w for t in OTHERS for w in started.get(t, [])]
        return {
            "mode": args.mode, "seconds": args.seconds, "slots_per_worker": args.slots,
            "a_cap": args.a_cap if fair else None, "scan": args.scan if args.mode == "fair_w" else None,
            "others_started": len(others),
            "others_submitted_approx": 10 * 10 * args.seconds,
            "others_wait_p50_ms": round(1000 * pct(others, 50), 1) if others else None,
            "others_wait_p99_ms": round(1000 * pct(others, 99), 1) if others else None,
            "others_wait_max_ms": round(1000 * max(others), 1) if others else None,
            "per_tenant_p99_ms": {t: round(1000 * pct(started.get(t, []), 99), 1)
                                  for t in OTHERS if started.get(t)},
            "A_started_per_s": round(a_rate, 1),
            "inflight_mean": round(statistics.mean(busy_samples), 1),
        }
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["fair", "off", "fair_w"])
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--slots", type=int, default=16)
    p.add_argument("--a-cap", type=int, default=4)
    p.add_argument("--scan", type=int, default=1000)
    r = asyncio.run(main(p.parse_args()))
    print(json.dumps(r))
    with open(HERE / "sim_results.jsonl", "a") as f:
        f.write(json.dumps(r) + "\n")
