"""Q3: priority aging. p1 backlog saturates the workers; does p10 ever run, and at what cost?

python aging.py VARIANT [--seconds 10] [--max-wait 2] [--share 10]
VARIANT: plain (no aging, same bookkeeping) | aged (in-claim starvation guard)
         | promote (maintenance: promote the p10 head every max-wait seconds)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import asyncpg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import final  # noqa: E402
import variants as v  # noqa: E402
from bench import admin, create_db  # noqa: E402

Q = "copywriter"


async def run(args) -> dict:
    name = f"fairness_spike_aging_{uuid.uuid4().hex[:6]}"
    dsn = await create_db(name, "ALTER TABLE queue_clocks ADD COLUMN last_served_at timestamptz NOT NULL DEFAULT now()")
    try:
        c = await asyncpg.connect(dsn)
        await c.execute("INSERT INTO tenants (id, name) VALUES ('X','X'), ('Y','Y')")
        await c.execute("INSERT INTO queue_clocks (queue, priority) VALUES ($1, 1), ($1, 10)", Q)
        await c.execute(
            """INSERT INTO tasks (id, tenant_id, queue, state, priority, fairness_key, payload)
               SELECT nextval('task_id_seq'), 'X', $1, 'queued', 1, g, '{}'
               FROM generate_series(1, 600000) g""", Q)
        await c.execute(
            """INSERT INTO tasks (id, tenant_id, queue, state, priority, fairness_key, payload)
               SELECT nextval('task_id_seq'), 'Y', $1, 'queued', 10, g, '{}'
               FROM generate_series(1, 20000) g""", Q)
        await c.execute("VACUUM ANALYZE")
        await c.close()
        sql = final.CLAIM_AGED if args.variant == "aged" else final.CLAIM_PLAIN_VT_LS
        st = {"claims": 0, "claim_s": 0.0, "p1": 0, "p10": 0, "promote_ms": []}
        deadline = time.perf_counter() + args.seconds

        async def claimer(i):
            conn = await asyncpg.connect(dsn)
            try:
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    rows = await conn.fetch(sql, Q, 100, f"w{i}", 30.0, 400, 3,
                                            float(args.max_wait), args.share)
                    st["claim_s"] += time.perf_counter() - t0
                    st["claims"] += 1
                    for r in rows:
                        st["p10" if r["tenant_id"] == "Y" else "p1"] += 1
                    nulls = json.dumps([None] * len(rows))
                    await conn.fetch(v.FINISH_BASELINE, [r["id"] for r in rows],
                                     [r["lease_token"] for r in rows],
                                     ["succeeded"] * len(rows), nulls, nulls)
            finally:
                await conn.close()

        async def promoter():
            conn = await asyncpg.connect(dsn)
            try:
                while time.perf_counter() < deadline:
                    await asyncio.sleep(args.max_wait)
                    t0 = time.perf_counter()
                    await conn.execute(final.PROMOTE_HEAD, Q, 10, args.share, 1)
                    st["promote_ms"].append(round(1000 * (time.perf_counter() - t0), 2))
            finally:
                await conn.close()

        jobs = [claimer(i) for i in range(4)]
        if args.variant == "promote":
            jobs.append(promoter())
        t0 = time.perf_counter()
        await asyncio.gather(*jobs)
        el = time.perf_counter() - t0
        # promoted tasks ran at p9 (tenant Y): counted in p10 above by tenant
        c = await asyncpg.connect(dsn)
        # the cost of the naive alternative, on what is left: every queued task older
        # than 0 s moves up a level (one maintenance pass)
        t1 = time.perf_counter()
        n_all = await c.execute(final.PROMOTE_ALL_OLD, Q, 0.0)
        naive_ms = round(1000 * (time.perf_counter() - t1))
        await c.close()
        return {"variant": args.variant, "seconds": round(el, 1), "max_wait": args.max_wait,
                "share": args.share, "claims": st["claims"],
                "claim_ms": round(1000 * st["claim_s"] / max(1, st["claims"]), 2),
                "p1_done": st["p1"], "p10_done": st["p10"],
                "tasks_per_s": round((st["p1"] + st["p10"]) / el),
                "p10_per_s": round(st["p10"] / el, 1),
                "promote_head_ms": st["promote_ms"][:5],
                "naive_promote_all": n_all, "naive_promote_all_ms": naive_ms}
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main():
    p = argparse.ArgumentParser()
    p.add_argument("variant", choices=["plain", "aged", "promote"])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--max-wait", type=float, default=2)
    p.add_argument("--share", type=int, default=10)
    r = asyncio.run(run(p.parse_args()))
    print(json.dumps(r))
    with open(HERE / "aging_results.jsonl", "a") as f:
        f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
