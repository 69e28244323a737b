"""Latency of one claim (statement plus commit) by batch size, with and without tenant caps.

A scratch database holds --queued ready tasks of one tenant. Each round claims n tasks in
its own transaction and finishes them, so the queue stays at the same depth; printed is the
median and p90 of the claim's wall time over --rounds rounds. Two cases: a tenant without a
plan (no cap, no rate: the short path) and a tenant whose cap never binds (the locked path:
advisory lock, count under a fresh snapshot).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.table import Table

from conveyor.store.params import ClaimRequest, Finish, LeaseRef, NewTask, TenantAgentUpdate
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch_database, server_dsn, server_facts

BATCHES = (1, 16, 100)


async def measure(dsn: str, capped: bool, queued: int, rounds: int) -> dict[int, list[float]]:
    async with scratch_database(dsn) as scratch:
        store = await PostgresStore.open(scratch)
        try:
            if capped:
                await store.create_tenant("t", plan="enterprise")
                await store.set_tenant_agent(TenantAgentUpdate("t", "work", max_concurrent=10**6))
            else:
                await store.create_tenant("t")
            for start in range(0, queued, 10_000):
                count = min(10_000, queued - start)
                await store.enqueue_batch([NewTask("work", tenant_id="t") for _ in range(count)])
            control = await asyncpg.connect(scratch)
            await control.execute("ANALYZE")
            await control.close()
            timings: dict[int, list[float]] = {}
            for n in BATCHES:
                request = ClaimRequest(("work",), n, "bench", 60)
                samples = []
                for _ in range(rounds):
                    began = time.perf_counter()
                    claimed = await store.claim(request)
                    samples.append(time.perf_counter() - began)
                    ok = TaskState.SUCCEEDED
                    await store.finish([Finish(LeaseRef(t.id, t.lease_token), ok) for t in claimed])
                    if claimed:
                        await store.enqueue_batch(
                            [NewTask("work", tenant_id="t") for _ in range(len(claimed))]
                        )
                timings[n] = sorted(samples)
        finally:
            await store.close()
    return timings


async def main(args: argparse.Namespace) -> None:
    console = Console(width=110)
    async with server_dsn(args.dsn) as dsn:
        probe = await asyncpg.connect(dsn)
        facts = await server_facts(probe)
        await probe.close()
        cases = {
            "no cap (tenant without a plan)": await measure(dsn, False, args.queued, args.rounds),
            "cap that never binds": await measure(dsn, True, args.queued, args.rounds),
        }
    console.print("[bold]Conveyor claim latency[/bold]")
    console.print(
        f"machine: {os.cpu_count()} cores; PostgreSQL {facts['server_version']}, "
        f"synchronous_commit={facts['synchronous_commit']}; {args.queued:,} queued, "
        f"{args.rounds} rounds per batch size"
    )
    table = Table(title="one claim + commit")
    for column in ("case", *(f"n={n} p50 / p90" for n in BATCHES)):
        table.add_column(column, justify="right")
    for case, timings in cases.items():
        cells = []
        for n in BATCHES:
            samples = timings[n]
            p50, p90 = samples[len(samples) // 2], samples[int(len(samples) * 0.9)]
            cells.append(f"{p50 * 1000:.2f} / {p90 * 1000:.2f} ms")
        table.add_row(case, *cells)
    console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="PostgreSQL server (default DATABASE_URL, else embedded)")
    parser.add_argument("--queued", type=int, default=40_000, help="ready tasks in the queue")
    parser.add_argument("--rounds", type=int, default=200, help="claims per batch size")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
