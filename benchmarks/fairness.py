"""Fair dequeue under a flood: one tenant's 100,000-task backlog against ten small tenants.

Tenant A (enterprise, cap --a-cap per role) submits --flood tasks at once; then tenants
B..K (pro plan: 2 running per role) each submit --rate tasks per second for --seconds.
--workers real `conveyor worker` processes (--concurrency slots each) run tasks that take
--task-ms. Printed per tenant: wait from enqueue to start, p50/p99/max. Then A's tasks per
second while its backlog drained and how many slots were running. The run is repeated with
fairness switched off (FIFO keys; caps still enforced) for contrast, and with A's cap
binding (--binding-cap): A must never exceed it while the others are still served.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from conveyor.store.params import NewTask, QueueLimits, TenantAgentUpdate
from conveyor.store.postgres import PostgresStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch_database, server_dsn, server_facts
from worker_concurrency import WorkerProcess, wait_registered

SMALL = [chr(c) for c in range(ord("B"), ord("K") + 1)]
WAITS = """
    SELECT tenant_id, count(*) AS tasks,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY w) AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY w) AS p99,
           max(w) AS max
    FROM (SELECT tenant_id, extract(epoch FROM started_at - created_at) AS w
          FROM task_history WHERE started_at IS NOT NULL) AS h
    GROUP BY tenant_id ORDER BY tenant_id
"""
# Through the partial indexes (running rows; A's ready rows), so sampling stays cheap.
BUSY = """
    SELECT (SELECT count(*) FROM tasks WHERE queue = 'work' AND state = 'running') AS running,
           (SELECT count(*) FROM tasks
            WHERE queue = 'work' AND tenant_id = 'A' AND state = 'running') AS a_running,
           EXISTS (SELECT 1 FROM tasks
                   WHERE queue = 'work' AND tenant_id = 'A' AND state = 'queued') AS a_queued
"""


async def submit_small(store: PostgresStore, rate: float, seconds: float) -> int:
    """Each small tenant submits one task every 1/rate s, as separate submissions."""
    submitted, tick, began = 0, 1.0 / rate, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        await asyncio.gather(
            *(store.enqueue(NewTask("work", {"ms": 20}, tenant_id=t)) for t in SMALL)
        )
        submitted += len(SMALL)
        await asyncio.sleep(max(0.0, (submitted / len(SMALL)) * tick - elapsed - tick))
    return submitted


async def sample_busy(dsn: str, stop: asyncio.Event) -> dict[str, Any]:
    """Every 100 ms: running tasks (while A had ready work) and A's most running at once."""
    conn = await asyncpg.connect(dsn)
    busy: list[int] = []
    a_max = 0
    first_a_empty: float | None = None
    began = time.perf_counter()
    try:
        while not stop.is_set():
            row = await conn.fetchrow(BUSY)
            if row["a_queued"]:
                busy.append(row["running"])
            elif first_a_empty is None:
                first_a_empty = time.perf_counter() - began
            a_max = max(a_max, row["a_running"])
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    return {
        "mean_busy": statistics.fmean(busy) if busy else 0.0,
        "samples": len(busy),
        "a_max_running": a_max,
        "a_drained_s": first_a_empty,
    }


async def run(dsn: str, args: argparse.Namespace, fair: bool, a_cap: int) -> dict[str, Any]:
    async with scratch_database(dsn) as scratch:
        store = await PostgresStore.open(scratch, fairness=fair, max_size=16)
        control = await asyncpg.connect(scratch)
        await store.create_tenant("A", plan="enterprise")
        await store.set_tenant_agent(TenantAgentUpdate("A", "work", max_concurrent=a_cap))
        for tenant in SMALL:
            await store.create_tenant(tenant, plan="pro")
            await store.set_tenant_agent(TenantAgentUpdate(tenant, "work", enabled=True))
        env = {"CONVEYOR_FAIRNESS": "true" if fair else "false"}
        if args.global_cap:
            await store.set_queue_limits(QueueLimits("work", max_running=args.global_cap))
        await store.pause_queue("work")
        for start in range(0, args.flood, 10_000):
            count = min(10_000, args.flood - start)
            await store.enqueue_batch(
                [NewTask("work", {"ms": args.task_ms}, tenant_id="A") for _ in range(count)]
            )
        await control.execute("ANALYZE")
        workers = [
            WorkerProcess(scratch, "work", args.concurrency, args.concurrency, env)
            for _ in range(args.workers)
        ]
        stop = asyncio.Event()
        try:
            await wait_registered(control, args.workers)
            sampler = asyncio.create_task(sample_busy(scratch, stop))
            began = time.perf_counter()
            await store.resume_queue("work")
            submitted = await submit_small(store, args.rate, args.seconds)
            while await control.fetchval("SELECT EXISTS (SELECT 1 FROM tasks)"):
                if time.perf_counter() - began > args.seconds + args.max_drain:
                    break
                await asyncio.sleep(0.5)
            stop.set()
            busy = await sampler
            waits = [dict(r) for r in await control.fetch(WAITS)]
            left = await control.fetchval("SELECT count(*) FROM tasks")
            a_done = await control.fetchval(
                "SELECT count(*) FROM task_history WHERE tenant_id = 'A'"
            )
        finally:
            for worker in workers:
                worker.stop()
            await store.close()
            await control.close()
    drained = busy["a_drained_s"] or (time.perf_counter() - began)
    return {
        "fair": fair,
        "a_cap": a_cap,
        "submitted_small": submitted,
        "waits": waits,
        "busy": busy,
        "left": left,
        "a_per_s": a_done / drained,
        "a_drained_s": busy["a_drained_s"],
    }


def print_run(console: Console, result: dict[str, Any], args: argparse.Namespace) -> None:
    mode = "fairness on" if result["fair"] else "fairness off (FIFO keys)"
    table = Table(title=f"{mode}, A's cap {result['a_cap']}: wait from enqueue to start")
    for column in ("tenant", "tasks", "p50", "p99", "max"):
        table.add_column(column, justify="right")
    for row in result["waits"]:
        table.add_row(
            row["tenant_id"], f"{row['tasks']:,}", f"{row['p50'] * 1000:,.0f} ms",
            f"{row['p99'] * 1000:,.0f} ms", f"{row['max'] * 1000:,.0f} ms",
        )  # fmt: skip
    console.print(table)
    small = [r for r in result["waits"] if r["tenant_id"] in SMALL]
    worst = max((r["p99"] for r in small), default=float("nan"))
    started = sum(r["tasks"] for r in small)
    busy = result["busy"]
    slots = args.workers * args.concurrency
    console.print(
        f"B..K: {started:,} of {result['submitted_small']:,} submitted tasks started; "
        f"worst p99 {worst * 1000:,.0f} ms (target <= 1,000 ms); "
        f"tasks left unfinished: {result['left']:,}"
    )
    drained = f"{result['a_drained_s']:.1f} s" if result["a_drained_s"] else "not drained"
    console.print(
        f"A: {result['a_per_s']:,.0f} tasks/s, backlog drained after {drained}; most running "
        f"at once {busy['a_max_running']} (cap {result['a_cap']}). While A had ready work "
        f"({busy['samples']} samples): mean {busy['mean_busy']:.1f} of {slots} slots running "
        f"in the database"
    )


async def main(args: argparse.Namespace) -> None:
    console = Console(width=120)
    async with server_dsn(args.dsn) as dsn:
        probe = await asyncpg.connect(dsn)
        facts = await server_facts(probe)
        await probe.close()
        results = [await run(dsn, args, fair=True, a_cap=args.a_cap)]
        if not args.skip_off:
            results.append(await run(dsn, args, fair=False, a_cap=args.a_cap))
        if args.binding_cap:
            results.append(await run(dsn, args, fair=True, a_cap=args.binding_cap))
    console.print("[bold]Conveyor fair dequeue[/bold]")
    console.print(
        f"machine: {os.cpu_count()} cores; PostgreSQL {facts['server_version']}, "
        f"synchronous_commit={facts['synchronous_commit']}; A floods {args.flood:,} tasks, "
        f"B..K submit {args.rate:g}/s each for {args.seconds:g} s; {args.workers} workers x "
        f"{args.concurrency} slots; tasks of {args.task_ms:g} ms; global cap "
        f"{args.global_cap or 'none'}"
    )
    for result in results:
        print_run(console, result, args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="PostgreSQL server (default DATABASE_URL, else embedded)")
    parser.add_argument("--flood", type=int, default=100_000, help="tenant A's backlog")
    parser.add_argument("--rate", type=float, default=10, help="tasks/s of each of B..K")
    parser.add_argument("--seconds", type=float, default=60, help="how long B..K submit")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=16, help="slots per worker")
    parser.add_argument("--task-ms", type=float, default=20, help="length of a task")
    parser.add_argument("--a-cap", type=int, default=1000, help="tenant A's cap (not binding)")
    parser.add_argument(
        "--binding-cap", type=int, default=16, help="a third run with A capped so (0: skip)"
    )
    parser.add_argument(
        "--global-cap", type=int, default=0, help="the role's cap over all tenants (0: none)"
    )
    parser.add_argument("--max-drain", type=float, default=120, help="give up after this")
    parser.add_argument("--skip-off", action="store_true", help="only the fair run")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
