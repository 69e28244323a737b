"""How many agents one worker process holds in flight, and what it costs per task.

Scenario "in flight": one `conveyor worker` process at --concurrency 10,000; 10,000 tasks
each awaiting a 1 s simulated model call are submitted at once to the idle worker. Printed:
wall time from submit to the last finish (ideal 1 s), the worker's peak RSS, and its
event-loop lag (p50/p99/max, from the worker's own monitor).

Scenario "no-op": 100,000 tasks that do nothing are submitted to a paused queue; once the
worker processes (one, then two) are up and idle the queue is resumed, and the clock runs
until every task is drained end to end (handler called, result recorded in history).

Targets (issue 3): in flight <= 2.5 s wall, peak RSS <= 250 MB, loop lag p99 <= 50 ms;
no-op >= 20,000 tasks/s with one process and >= 30,000 tasks/s with two.

``--tracing`` drains the no-op tasks again with OpenTelemetry tracing on: the workers
export every span over OTLP/HTTP (``OTEL_TRACES_EXPORTER=otlp``) to a collector stand-in
this script serves, which decodes and counts them; the table compares both runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from conveyor.store.params import NewTask, QueueLimits
from conveyor.store.postgres import PostgresStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch_database, server_dsn, server_facts
from span_sink import SpanSink

ROOT = Path(__file__).resolve().parents[1]


class WorkerProcess:
    """One `conveyor worker` child; JSON logs in a temp file."""

    def __init__(
        self,
        dsn: str,
        queue: str,
        concurrency: int,
        claim_batch: int,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            "w+", prefix="conveyor-bench-", suffix=".log"
        )
        env = {**os.environ, "DATABASE_URL": dsn, "PYTHONPATH": str(ROOT), **(env or {})}
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "conveyor.cli", "worker",
                "--app", "benchmarks.worker_agents:app", "--queue", queue,
                "--concurrency", str(concurrency), "--claim-batch", str(claim_batch),
                "--no-migrate", "--log-level", "INFO",
            ],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log_file,
        )  # fmt: skip

    def peak_rss_mb(self) -> float:
        """VmHWM of the process: its peak resident memory so far."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait, and return the worker's final log event."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log_file.seek(0)
        final: dict[str, Any] = {}
        for line in self.log_file:
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == "worker_stopped":
                    final = event
        self.log_file.close()
        return final


async def wait_registered(conn: asyncpg.Connection, count: int) -> None:
    while await conn.fetchval("SELECT count(*) FROM workers WHERE state = 'running'") < count:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # past the first empty claim: the workers are idle now


async def wait_finished(conn: asyncpg.Connection, total: int) -> float:
    while await conn.fetchval("SELECT count(*) FROM task_history") < total:
        await asyncio.sleep(0.01)
    return time.perf_counter()


async def in_flight(dsn: str, tasks: int, seconds: float) -> dict[str, Any]:
    async with scratch_database(dsn) as scratch:
        control = await asyncpg.connect(scratch)
        store = await PostgresStore.open(scratch)
        worker = WorkerProcess(scratch, "llm", concurrency=tasks, claim_batch=1000)
        try:
            await wait_registered(control, 1)
            batch = [NewTask("llm", {"seconds": seconds}) for _ in range(tasks)]
            began = time.perf_counter()
            await store.enqueue_batch(batch)
            ended = await wait_finished(control, tasks)
            rss = worker.peak_rss_mb()
        finally:
            final = worker.stop()
            await store.close()
            await control.close()
    return {"wall_s": ended - began, "ideal_s": seconds, "peak_rss_mb": rss, **final}


async def no_op(
    dsn: str,
    tasks: int,
    processes: int,
    events: bool = True,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    async with scratch_database(dsn) as scratch:
        control = await asyncpg.connect(scratch)
        store = await PostgresStore.open(scratch)
        # The task event log's lifecycle events (docs/events.md): on by default.
        await store.set_queue_limits(QueueLimits("noop", events=events))
        # Paused while the workers boot, so the clock measures draining, not start-up.
        await store.pause_queue("noop")
        for start in range(0, tasks, 10_000):
            await store.enqueue_batch([NewTask("noop") for _ in range(min(10_000, tasks - start))])
        await control.execute("ANALYZE tasks")
        workers = [WorkerProcess(scratch, "noop", 1000, 500, env) for _ in range(processes)]
        try:
            await wait_registered(control, processes)
            began = time.perf_counter()
            await store.resume_queue("noop")  # NOTIFY wakes the idle workers
            ended = await wait_finished(control, tasks)
        finally:
            finals = [w.stop() for w in workers]
            await store.close()
            await control.close()
    return {"tasks_per_s": tasks / (ended - began), "seconds": ended - began, "workers": finals}


async def main(args: argparse.Namespace) -> None:
    console = Console(width=110)
    async with server_dsn(args.dsn) as dsn:
        probe = await asyncpg.connect(dsn)
        facts = await server_facts(probe)
        await probe.close()
        flight = await in_flight(dsn, args.in_flight, args.seconds)
        one = await no_op(dsn, args.noop, 1)
        two = await no_op(dsn, args.noop, 2)
        quiet = {}
        if args.events_off:
            quiet = {n: await no_op(dsn, args.noop, n, events=False) for n in (1, 2)}
        traced: dict[int, dict[str, Any]] = {}
        sampled: dict[int, dict[str, Any]] = {}
        if args.tracing:
            with SpanSink() as sink:
                for n in (1, 2):
                    before = sink.spans
                    traced[n] = await no_op(dsn, args.noop, n, env=sink.worker_env())
                    traced[n]["spans"] = sink.spans - before
                    before = sink.spans
                    sampled[n] = await no_op(dsn, args.noop, n, env=sink.worker_env(0.1))
                    sampled[n]["spans"] = sink.spans - before
    console.print("[bold]Conveyor worker concurrency[/bold]")
    console.print(f"machine: {os.cpu_count()} cores; PostgreSQL {facts['server_version']}, "
                  f"synchronous_commit={facts['synchronous_commit']}")  # fmt: skip
    table = Table(title=f"{args.in_flight:,} tasks awaiting {args.seconds:g} s, one process")
    for column in ("wall", "ideal", "peak RSS", "loop lag p50", "p99", "max"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{flight['wall_s']:.2f} s", f"{flight['ideal_s']:.2f} s",
        f"{flight['peak_rss_mb']:.0f} MB", f"{flight.get('loop_lag_p50_ms', 0):.1f} ms",
        f"{flight.get('loop_lag_p99_ms', 0):.1f} ms", f"{flight.get('loop_lag_max_ms', 0):.1f} ms",
    )  # fmt: skip
    console.print(table)
    table = Table(title=f"{args.noop:,} no-op tasks end to end")
    for column in ("worker processes", "tasks/s", "seconds", "target"):
        table.add_column(column, justify="right")
    table.add_row("1", f"{one['tasks_per_s']:,.0f}", f"{one['seconds']:.2f}", ">= 20,000")
    table.add_row("2", f"{two['tasks_per_s']:,.0f}", f"{two['seconds']:.2f}", ">= 30,000")
    console.print(table)
    if quiet:
        table = Table(title="No-op tasks/s with the task event log's lifecycle events on and off")
        for column in ("worker processes", "events on", "events off", "on / off", "target"):
            table.add_column(column, justify="right")
        for n, on in ((1, one), (2, two)):
            ratio = on["tasks_per_s"] / quiet[n]["tasks_per_s"]
            table.add_row(
                str(n), f"{on['tasks_per_s']:,.0f}", f"{quiet[n]['tasks_per_s']:,.0f}",
                f"{ratio:.0%}", ">= 75%",
            )  # fmt: skip
        console.print(table)
    if traced:
        table = Table(title="No-op tasks/s with tracing off and on (OTLP/HTTP to a local sink)")
        for column in (
            "worker processes", "off", "on: every task", "/ off", "spans",
            "on: 10% sampled", "/ off", "spans",
        ):  # fmt: skip
            table.add_column(column, justify="right")
        for n, off in ((1, one), (2, two)):
            on, tenth = traced[n], sampled[n]
            table.add_row(
                str(n), f"{off['tasks_per_s']:,.0f}",
                f"{on['tasks_per_s']:,.0f}", f"{on['tasks_per_s'] / off['tasks_per_s']:.0%}",
                f"{on['spans']:,}",
                f"{tenth['tasks_per_s']:,.0f}", f"{tenth['tasks_per_s'] / off['tasks_per_s']:.0%}",
                f"{tenth['spans']:,}",
            )  # fmt: skip
        console.print(table)
    checks = {
        "in-flight wall <= 2.5 s": flight["wall_s"] <= 2.5,
        "peak RSS <= 250 MB": flight["peak_rss_mb"] <= 250,
        "loop lag p99 <= 50 ms": flight.get("loop_lag_p99_ms", 1e9) <= 50,
        "no-op, 1 process >= 20,000/s": one["tasks_per_s"] >= 20_000,
        "no-op, 2 processes >= 30,000/s": two["tasks_per_s"] >= 30_000,
    }
    for name, met in checks.items():
        console.print(f"target {name}: {'[green]met[/green]' if met else '[red]missed[/red]'}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="PostgreSQL server (default DATABASE_URL, else embedded)")
    parser.add_argument("--in-flight", type=int, default=10_000, help="tasks held at once")
    parser.add_argument("--seconds", type=float, default=1.0, help="simulated call length")
    parser.add_argument("--noop", type=int, default=100_000, help="no-op tasks to drain")
    parser.add_argument(
        "--events-off",
        action="store_true",
        help="also drain with the queue's lifecycle events off, and compare",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also drain with tracing on (OTLP to a local collector stand-in), and compare",
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
