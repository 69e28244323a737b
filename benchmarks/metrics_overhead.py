"""What the worker's metrics cost: no-op tasks drained with metrics off and on.

Off: `conveyor worker` without --metrics-port (no task hook, no sampler, no pool observer).
On: with --metrics-port, so every run goes through the TaskMetrics hook (two histogram
observations), every pool acquire is timed, the load sampler reads the queues every
CONVEYOR_METRICS_SECONDS (default 10 s) and a scraper reads /metrics every second, as a
busy Prometheus would. Each mode drains `--tasks` no-op tasks from a paused queue (resumed
once the worker is idle), `--rounds` times, alternating, and the table shows each run and
the medians. One process, --concurrency 1000, --claim-batch 500 (as worker_concurrency.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.table import Table

from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch_database, server_dsn, server_facts

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_worker(dsn: str, metrics_port: int | None) -> subprocess.Popen[bytes]:
    extra = [] if metrics_port is None else ["--metrics-port", str(metrics_port),
                                             "--metrics-host", "127.0.0.1"]  # fmt: skip
    return subprocess.Popen(
        [
            sys.executable, "-m", "conveyor.cli", "worker",
            "--app", "benchmarks.worker_agents:app", "--queue", "noop",
            "--concurrency", "1000", "--claim-batch", "500", "--no-migrate",
            "--log-level", "WARNING", *extra,
        ],
        env={**os.environ, "DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=tempfile.TemporaryFile(),
    )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape_forever(port: int, stop: asyncio.Event) -> int:
    """Scrape /metrics every second until ``stop``; how many scrapes answered."""
    scrapes = 0
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                reply.read()
            scrapes += 1
        except OSError:
            pass
        time.sleep(1.0)
    return scrapes


async def drain(dsn: str, tasks: int, metrics: bool) -> tuple[float, float]:
    """Tasks per second of one worker draining ``tasks`` no-op tasks, and the worker's CPU
    time per task in microseconds (less swayed by a busy machine than the rate)."""
    async with scratch_database(dsn) as scratch:
        control = await asyncpg.connect(scratch)
        store = await PostgresStore.open(scratch)
        await store.pause_queue("noop")
        for start in range(0, tasks, 10_000):
            await store.enqueue_batch([NewTask("noop") for _ in range(min(10_000, tasks - start))])
        await control.execute("ANALYZE tasks")
        port = free_port() if metrics else None
        worker = start_worker(scratch, port)
        stop = asyncio.Event()
        scraper = None
        try:
            while await control.fetchval("SELECT count(*) FROM workers WHERE state='running'") < 1:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            if port is not None:
                scraper = asyncio.create_task(asyncio.to_thread(scrape_forever, port, stop))
            began, cpu_began = time.perf_counter(), cpu_seconds(worker.pid)
            await store.resume_queue("noop")
            while await control.fetchval("SELECT count(*) FROM task_history") < tasks:
                await asyncio.sleep(0.01)
            ended, cpu_ended = time.perf_counter(), cpu_seconds(worker.pid)
        finally:
            stop.set()
            if scraper is not None:
                await scraper
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
            await store.close()
            await control.close()
    return tasks / (ended - began), (cpu_ended - cpu_began) / tasks * 1e6


async def main(args: argparse.Namespace) -> None:
    console = Console(width=100)
    runs: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    async with server_dsn(args.dsn) as dsn:
        probe = await asyncpg.connect(dsn)
        facts = await server_facts(probe)
        await probe.close()
        for _ in range(args.rounds):
            for metrics in (False, True):
                rate, micros = await drain(dsn, args.tasks, metrics)
                runs[metrics].append(rate)
                cpu[metrics].append(micros)
    console.print(f"machine: {os.cpu_count()} cores; PostgreSQL {facts['server_version']}")
    table = Table(title=f"{args.tasks:,} no-op tasks, one worker: tasks/s")
    table.add_column("metrics")
    for n in range(args.rounds):
        table.add_column(f"run {n + 1}", justify="right")
    table.add_column("median", justify="right")
    table.add_column("worker CPU/task (median)", justify="right")
    for metrics in (False, True):
        values = runs[metrics]
        table.add_row("on" if metrics else "off", *(f"{v:,.0f}" for v in values),
                      f"{statistics.median(values):,.0f}",
                      f"{statistics.median(cpu[metrics]):.1f} us")  # fmt: skip
    console.print(table)
    ratio = statistics.median(runs[True]) / statistics.median(runs[False])
    extra = statistics.median(cpu[True]) - statistics.median(cpu[False])
    console.print(f"on / off: {ratio:.1%} of the rate; {extra:+.1f} us of worker CPU a task")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="PostgreSQL server (default DATABASE_URL, else embedded)")
    parser.add_argument("--tasks", type=int, default=50_000, help="no-op tasks per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
