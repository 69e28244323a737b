"""Queue throughput: Conveyor's batch enqueue and claim+complete against a raw SQL loop.

Both sides run in the same process, against the same server, in one fresh scratch database
(created here, dropped at the end), so the ratio cancels out most of the machine:

- enqueue (batch): N no-op tasks through ``PostgresStore.enqueue_batch`` in batches, versus a
  bulk ``INSERT ... SELECT FROM unnest(...)`` of the same rows and batch size into a plain
  table;
- claim+complete (batch): C concurrent loops each claiming B tasks (``store.claim``) and
  finishing them as succeeded (``store.finish``) until the queue is empty, versus C loops of
  ``DELETE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT B) RETURNING id``;
- the floor (printed, not a target): the same drain in raw SQL doing the least the queue's
  semantics need, a lease ``UPDATE`` under a new token, then a ``DELETE`` matching the token
  into a history ``INSERT``.

Commits are durable: the server's ``synchronous_commit`` and ``fsync`` are left as they are
(and printed). Targets: bulk enqueue >= 100,000 tasks/s; claim+complete >= 50 % of raw.

Usage::

    python benchmarks/queue_throughput.py                      # the embedded server
    python benchmarks/queue_throughput.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
    python benchmarks/queue_throughput.py --tasks 20000 --json results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from conveyor.store.params import ClaimRequest, Finish, LeaseRef, NewTask, QueueLimits
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch_database, server_dsn, server_facts

QUEUE = "bench"
ENQUEUE_TARGET = 100_000.0
CLAIM_RATIO_TARGET = 0.5

RAW_SCHEMA = """
CREATE TABLE raw_tasks (
    id          bigserial PRIMARY KEY,
    queue       text NOT NULL,
    priority    smallint NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX raw_tasks_claim_idx ON raw_tasks (priority, id);

-- The floor: the least any client can do that keeps issue 2's semantics (a lease with a
-- fencing token written at claim, a finish that refuses a stale token and moves the row to
-- a history table in the same transaction), in raw SQL, with no fairness and no caps.
CREATE SEQUENCE floor_tokens;
CREATE TABLE floor_tasks (
    id                bigserial PRIMARY KEY,
    queue             text NOT NULL,
    state             text NOT NULL,
    priority          smallint NOT NULL,
    attempts          integer NOT NULL DEFAULT 0,
    lease_token       bigint,
    lease_expires_at  timestamptz,
    worker_id         text,
    payload           jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz
);
CREATE INDEX floor_tasks_claim_idx ON floor_tasks (queue, priority, id) WHERE state = 'queued';
CREATE INDEX floor_tasks_lease_idx ON floor_tasks (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
CREATE TABLE floor_history (
    id           bigint PRIMARY KEY,
    queue        text NOT NULL,
    state        text NOT NULL,
    attempts     integer NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz NOT NULL DEFAULT now()
);
"""

RAW_INSERT = """
INSERT INTO raw_tasks (queue, priority, payload)
SELECT * FROM unnest($1::text[], $2::smallint[], $3::jsonb[])
"""

RAW_CLAIM = """
DELETE FROM raw_tasks
WHERE id IN (
    SELECT id FROM raw_tasks ORDER BY priority, id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id
"""

FLOOR_INSERT = """
INSERT INTO floor_tasks (queue, state, priority, payload)
SELECT q, 'queued', p, j FROM unnest($1::text[], $2::smallint[], $3::jsonb[]) AS u(q, p, j)
"""

FLOOR_CLAIM = """
UPDATE floor_tasks
SET state = 'running', attempts = attempts + 1, lease_token = nextval('floor_tokens'),
    lease_expires_at = now() + interval '300 seconds', worker_id = $2, started_at = now()
WHERE id IN (
    SELECT id FROM floor_tasks WHERE queue = $3 AND state = 'queued'
    ORDER BY priority, id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, lease_token, payload
"""

FLOOR_FINISH = """
WITH done AS (
    DELETE FROM floor_tasks AS t
    USING unnest($1::bigint[], $2::bigint[]) AS r(id, token)
    WHERE t.id = r.id AND t.lease_token = r.token
    RETURNING t.*
)
INSERT INTO floor_history (id, queue, state, attempts, payload, created_at, started_at)
SELECT id, queue, 'succeeded', attempts, payload, created_at, started_at FROM done
"""


@dataclass
class PhaseResult:
    """One phase of one side: how many tasks in how many seconds."""

    tasks: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Report:
    """Everything the run measured, as printed and as written with --json."""

    machine: dict[str, Any]
    server: dict[str, str]
    settings: dict[str, Any]
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)


# -- the server and the scratch database ------------------------------------------------


async def settle(conn: asyncpg.Connection) -> None:
    """Start each phase from the same place: fresh statistics, and a checkpoint if allowed."""
    await conn.execute("ANALYZE tasks, raw_tasks, floor_tasks")
    with suppress(asyncpg.PostgresError):  # not a superuser (nor pg_checkpoint): carry on
        await conn.execute("CHECKPOINT")


# -- the phases -------------------------------------------------------------------------


def payload_of(i: int) -> dict[str, Any]:
    return {"n": i}


async def conveyor_enqueue(store: PostgresStore, total: int, batch: int) -> PhaseResult:
    """N tasks through enqueue_batch; the NewTask objects are built outside the clock."""
    batches = [
        [
            NewTask(queue=QUEUE, payload=payload_of(i))
            for i in range(start, min(start + batch, total))
        ]
        for start in range(0, total, batch)
    ]
    began = time.perf_counter()
    for tasks in batches:
        await store.enqueue_batch(tasks)
    return PhaseResult(total, time.perf_counter() - began)


async def raw_enqueue(
    pool: asyncpg.Pool, total: int, batch: int, statement: str = RAW_INSERT
) -> PhaseResult:
    """The same rows with one INSERT ... unnest per batch; JSON encoding is on the clock.
    ``statement`` takes (queues, priorities, payloads): the raw table's, or the floor's."""
    async with pool.acquire() as conn:
        began = time.perf_counter()
        for start in range(0, total, batch):
            count = min(batch, total - start)
            await conn.execute(
                statement,
                [QUEUE] * count,
                [5] * count,
                [
                    json.dumps(payload_of(i), separators=(",", ":"))
                    for i in range(start, start + count)
                ],
            )
        return PhaseResult(total, time.perf_counter() - began)


async def run_loops(concurrency: int, loop: Callable[[int], Awaitable[int]]) -> PhaseResult:
    """``concurrency`` copies of ``loop`` at once; the tasks they handled and the wall time."""
    began = time.perf_counter()
    counts = await asyncio.gather(*(loop(n) for n in range(concurrency)))
    return PhaseResult(sum(counts), time.perf_counter() - began)


async def conveyor_drain(store: PostgresStore, concurrency: int, batch: int) -> PhaseResult:
    async def loop(n: int) -> int:
        request = ClaimRequest(
            queues=(QUEUE,), limit=batch, worker_id=f"bench-{n}", lease_seconds=300.0
        )
        handled = 0
        while True:
            claimed = await store.claim(request)
            if not claimed:
                return handled
            refused = await store.finish(
                [
                    Finish(LeaseRef(task.id, task.lease_token), TaskState.SUCCEEDED, None)
                    for task in claimed
                ]
            )
            if refused:
                raise RuntimeError(f"finish refused {len(refused)} tasks")
            handled += len(claimed)

    return await run_loops(concurrency, loop)


async def floor_drain(pool: asyncpg.Pool, concurrency: int, batch: int) -> PhaseResult:
    """Claim under a new token, then finish into history in one transaction, per batch."""

    async def loop(n: int) -> int:
        handled = 0
        async with pool.acquire() as conn:
            while True:
                rows = await conn.fetch(FLOOR_CLAIM, batch, f"floor-{n}", QUEUE)
                if not rows:
                    return handled
                ids = [row["id"] for row in rows]
                tokens = [row["lease_token"] for row in rows]
                await conn.execute(FLOOR_FINISH, ids, tokens)
                handled += len(rows)

    return await run_loops(concurrency, loop)


async def raw_drain(pool: asyncpg.Pool, concurrency: int, batch: int) -> PhaseResult:
    async def loop(n: int) -> int:
        handled = 0
        async with pool.acquire() as conn:
            while True:
                rows = await conn.fetch(RAW_CLAIM, batch)
                if not rows:
                    return handled
                handled += len(rows)

    return await run_loops(concurrency, loop)


# -- the run ----------------------------------------------------------------------------


async def measure(dsn: str, args: argparse.Namespace) -> Report:
    async with scratch_database(dsn, RAW_SCHEMA) as scratch:
        control = await asyncpg.connect(scratch)
        store = await PostgresStore.open(
            scratch, min_size=args.concurrency, max_size=args.concurrency
        )
        raw_pool = await asyncpg.create_pool(
            scratch, min_size=args.concurrency, max_size=args.concurrency
        )
        assert raw_pool is not None
        try:
            report = Report(
                machine={
                    "cores": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
                server=await server_facts(control),
                settings={
                    "tasks": args.tasks,
                    "enqueue_batch": args.batch,
                    "claim_batch": args.claim_batch,
                    "concurrency": args.concurrency,
                    "lifecycle_events": not args.events_off,
                },
            )
            results: dict[str, tuple[PhaseResult, PhaseResult]] = {}
            if args.events_off:  # the task event log's lifecycle events (docs/events.md)
                await store.set_queue_limits(QueueLimits(QUEUE, events=False))

            await settle(control)
            conveyor = await conveyor_enqueue(store, args.tasks, args.batch)
            await settle(control)
            raw = await raw_enqueue(raw_pool, args.tasks, args.batch)
            results["enqueue (batch)"] = (conveyor, raw)

            await settle(control)
            conveyor = await conveyor_drain(store, args.concurrency, args.claim_batch)
            await settle(control)
            raw = await raw_drain(raw_pool, args.concurrency, args.claim_batch)
            results["claim+complete (batch)"] = (conveyor, raw)
            await raw_enqueue(raw_pool, args.tasks, args.batch, FLOOR_INSERT)  # off the clock
            await settle(control)
            floor = await floor_drain(raw_pool, args.concurrency, args.claim_batch)

            await check_drained(control, args.tasks)
        finally:
            await raw_pool.close()
            await store.close()
            await control.close()

    for phase, (conveyor, raw) in results.items():
        report.phases[phase] = {
            "conveyor_tasks_per_s": round(conveyor.per_second, 1),
            "raw_tasks_per_s": round(raw.per_second, 1),
            "ratio": round(conveyor.per_second / raw.per_second, 3) if raw.per_second else 0.0,
            "conveyor_seconds": round(conveyor.seconds, 3),
            "raw_seconds": round(raw.seconds, 3),
        }
    claim_phase = report.phases["claim+complete (batch)"]
    claim_phase["floor_tasks_per_s"] = round(floor.per_second, 1)
    claim_phase["floor_ratio"] = (
        round(floor.per_second / claim_phase["raw_tasks_per_s"], 3)
        if claim_phase["raw_tasks_per_s"]
        else 0.0
    )
    enqueue = report.phases["enqueue (batch)"]["conveyor_tasks_per_s"]
    ratio = report.phases["claim+complete (batch)"]["ratio"]
    report.targets = {
        "bulk enqueue >= 100,000 tasks/s": {
            "value": enqueue,
            "shown": f"{enqueue:,.0f} tasks/s",
            "met": enqueue >= ENQUEUE_TARGET,
        },
        "claim+complete >= 50% of raw": {
            "value": ratio,
            "shown": f"{ratio:.0%} of raw",
            "met": ratio >= CLAIM_RATIO_TARGET,
        },
    }
    return report


async def check_drained(conn: asyncpg.Connection, total: int) -> None:
    """Every task went through: none left, N in history, the raw table empty."""
    left = await conn.fetchval("SELECT count(*) FROM tasks")
    finished = await conn.fetchval("SELECT count(*) FROM task_history WHERE state = 'succeeded'")
    raw_left = await conn.fetchval("SELECT count(*) FROM raw_tasks")
    floor_left = await conn.fetchval("SELECT count(*) FROM floor_tasks")
    floor_done = await conn.fetchval("SELECT count(*) FROM floor_history")
    if left or finished != total or raw_left or floor_left or floor_done != total:
        raise RuntimeError(
            f"queue not drained: {left} tasks left, {finished}/{total} finished, "
            f"{raw_left} raw rows left, {floor_left} floor rows left"
        )


def render(report: Report, console: Console) -> None:
    server = report.server
    settings = report.settings
    console.print("[bold]Conveyor queue throughput[/bold]")
    console.print(f"machine: {report.machine['cores']} cores, {report.machine['platform']}")
    console.print(f"PostgreSQL: {server['server_version']}")
    console.print(
        f"durability: synchronous_commit={server['synchronous_commit']}, fsync={server['fsync']}"
        f" (shared_buffers={server['shared_buffers']}, autovacuum={server['autovacuum']})"
    )
    console.print(
        f"workload: N={settings['tasks']:,} no-op tasks, enqueue batch "
        f"{settings['enqueue_batch']:,}, claim batch {settings['claim_batch']}, "
        f"concurrency {settings['concurrency']} claim loops (each side), lifecycle events "
        f"{'on' if settings.get('lifecycle_events', True) else 'off'}"
    )
    console.print(
        "method: ANALYZE + CHECKPOINT before each phase; one enqueue submitter; "
        "raw json.dumps timed"
    )
    table = Table()
    table.add_column("phase")
    table.add_column("conveyor tasks/s", justify="right")
    table.add_column("raw tasks/s", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("floor tasks/s (ratio to raw)", justify="right")
    for phase, numbers in report.phases.items():
        floor = numbers.get("floor_tasks_per_s")
        table.add_row(
            phase,
            f"{numbers['conveyor_tasks_per_s']:,.0f}",
            f"{numbers['raw_tasks_per_s']:,.0f}",
            f"{numbers['ratio']:.0%}",
            f"{floor:,.0f} ({numbers['floor_ratio']:.0%})" if floor else "",
        )
    console.print(table)
    console.print(
        "floor: the same claim+complete in raw SQL with the least the queue must do (a lease "
        "with a new token per claim; finish refuses a stale token and moves the row to a "
        "history table in the same transaction), no fairness, no caps"
    )
    for target, outcome in report.targets.items():
        mark = "[green]met[/green]" if outcome["met"] else "[red]missed[/red]"
        console.print(f"target {target}: {mark} ({outcome['shown']})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Conveyor enqueue and claim+complete throughput versus a raw SQL loop."
    )
    parser.add_argument(
        "--dsn",
        default=None,
        help="a PostgreSQL server (default: DATABASE_URL, else the embedded server); "
        "a scratch database is created on it and dropped at the end",
    )
    parser.add_argument("--tasks", type=int, default=100_000, help="N tasks (default 100000)")
    parser.add_argument("--batch", type=int, default=10_000, help="enqueue batch size")
    parser.add_argument("--claim-batch", type=int, default=100, help="claim batch size")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="concurrent claim loops (both sides)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument(
        "--events-off",
        action="store_true",
        help="turn the queue's lifecycle events (the task event log) off",
    )
    args = parser.parse_args(argv)
    for name in ("tasks", "batch", "claim_batch", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


async def amain(args: argparse.Namespace) -> Report:
    async with server_dsn(args.dsn) as dsn:
        return await measure(dsn, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(amain(args))
    # A pipe gets 80 columns by default, which wraps the header lines.
    render(report, Console(width=None if sys.stdout.isatty() else 110))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
