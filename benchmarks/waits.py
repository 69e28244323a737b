"""Durable waits at scale: one worker of 16 slots parks N tasks in ctx.wait_for, runs other
work while they wait, and resumes them by signals.

Phases, against one `conveyor worker --concurrency 16` process:

1. park: N tasks of an agent that calls ``ctx.wait_for("go")`` are submitted to a paused
   queue; the queue is resumed and the clock runs until all N are ``waiting``. Printed:
   tasks parked per second, and what the parked tasks hold then (leases, running rows,
   the worker's running count: all 0 when waits hold nothing).
2. meanwhile: 1,000 no-op tasks are submitted while the N wait; the clock runs until they
   are drained (the same worker, the same 16 slots).
3. resume: N signals are delivered (``deliver_signal``, 8 senders at once), then the clock
   runs until all N tasks have succeeded. Printed: signals per second, and the time from
   the first signal to the last task finished.

The worker's peak RSS is read from /proc at the end. Tests never assert on timing; this
prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.table import Table

from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch_database, server_dsn, server_facts

ROOT = Path(__file__).resolve().parents[1]


class WorkerProcess:
    """One `conveyor worker` child serving benchmarks/wait_agents.py."""

    def __init__(self, dsn: str, concurrency: int) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            "w+", prefix="conveyor-bench-waits-", suffix=".log"
        )
        env = {**os.environ, "DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "conveyor.cli", "worker",
                "--app", "benchmarks.wait_agents:app", "--concurrency", str(concurrency),
                "--no-migrate", "--log-level", "WARNING",
            ],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log.close()


async def until_count(conn: asyncpg.Connection, sql: str, wanted: int) -> float:
    while await conn.fetchval(sql) < wanted:
        await asyncio.sleep(0.02)
    return time.perf_counter()


async def run(dsn: str, tasks: int, concurrency: int) -> dict[str, float]:
    async with scratch_database(dsn) as scratch:
        control = await asyncpg.connect(scratch)
        store = await PostgresStore.open(scratch, max_size=10)
        await store.pause_queue("park")
        ids: list[int] = []
        for start in range(0, tasks, 10_000):
            made = await store.enqueue_batch(
                [NewTask("park", {"n": n}) for n in range(start, min(tasks, start + 10_000))]
            )
            ids += [m.task_id for m in made]
        await control.execute("ANALYZE tasks")
        worker = WorkerProcess(scratch, concurrency)
        try:
            while not await control.fetchval("SELECT count(*) FROM workers"):
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            began = time.perf_counter()
            await store.resume_queue("park")
            waiting = "SELECT count(*) FROM tasks WHERE state = 'waiting'"
            parked = await until_count(control, waiting, tasks)
            held = await control.fetchval(
                "SELECT count(*) FROM tasks WHERE lease_token IS NOT NULL OR worker_id IS NOT NULL"
            )
            running = await control.fetchval("SELECT count(*) FROM tasks WHERE state = 'running'")

            quick_began = time.perf_counter()
            await store.enqueue_batch([NewTask("quick") for _ in range(1_000)])
            done = "SELECT count(*) FROM task_history WHERE queue = 'quick'"
            quick_done = await until_count(control, done, 1_000)
            still_waiting = await control.fetchval(waiting)

            signals_began = time.perf_counter()
            queue: asyncio.Queue[int] = asyncio.Queue()
            for task_id in ids:
                queue.put_nowait(task_id)

            async def sender() -> None:
                while not queue.empty():
                    task_id = queue.get_nowait()
                    await store.deliver_signal(task_id, "go", {"n": task_id})

            await asyncio.gather(*(sender() for _ in range(8)))
            signals_sent = time.perf_counter()
            finished = "SELECT count(*) FROM task_history WHERE queue = 'park'"
            resumed = await until_count(control, finished, tasks)
            rss = worker.peak_rss_mb()
        finally:
            worker.stop()
            await store.close()
            await control.close()
    return {
        "park_s": parked - began,
        "held": held,
        "running": running,
        "quick_s": quick_done - quick_began,
        "still_waiting": still_waiting,
        "signals_s": signals_sent - signals_began,
        "resume_s": resumed - signals_began,
        "rss_mb": rss,
    }


async def main(args: argparse.Namespace) -> None:
    console = Console(width=110)
    async with server_dsn(args.dsn) as dsn:
        probe = await asyncpg.connect(dsn)
        facts = await server_facts(probe)
        await probe.close()
        r = await run(dsn, args.tasks, args.concurrency)
    n = args.tasks
    console.print("[bold]Conveyor durable waits[/bold]")
    console.print(f"machine: {os.cpu_count()} cores; PostgreSQL {facts['server_version']}, "
                  f"synchronous_commit={facts['synchronous_commit']}")  # fmt: skip
    table = Table(title=f"{n:,} tasks waiting at once, one worker of {args.concurrency} slots")
    for column in ("phase", "result"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    table.add_row("park: all waiting after", f"{r['park_s']:.2f} s ({n / r['park_s']:,.0f}/s)")
    table.add_row("  leases / workers held by waiting tasks", f"{r['held']:.0f}")
    table.add_row("  running rows", f"{r['running']:.0f}")
    table.add_row(
        "meanwhile: 1,000 other tasks drained in",
        f"{r['quick_s']:.2f} s (still waiting: {r['still_waiting']:,.0f})",
    )
    table.add_row(
        "resume: signals delivered (8 senders)",
        f"{r['signals_s']:.2f} s ({n / r['signals_s']:,.0f}/s)",
    )
    table.add_row("  first signal to last task succeeded", f"{r['resume_s']:.2f} s")
    table.add_row("worker peak RSS", f"{r['rss_mb']:.0f} MB")
    console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="PostgreSQL server (default DATABASE_URL, else embedded)")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks waiting at once")
    parser.add_argument("--concurrency", type=int, default=16, help="the worker's slots")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
