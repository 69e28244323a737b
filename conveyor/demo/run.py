"""``conveyor demo``: submit a multi-tenant agency batch, process it, show what happened."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.live import Live
from rich.table import Table

from conveyor.demo import agents, report
from conveyor.demo.llm import DemoProvider, demo_provider
from conveyor.gateway import Gateway
from conveyor.observability.logging import configure_logging
from conveyor.settings import Settings
from conveyor.store.database import open_store
from conveyor.store.params import ClaimRequest, NewTask, ReplayFilter, TenantAgentUpdate
from conveyor.store.postgres import PostgresStore
from conveyor.types import Priority
from conveyor.worker.maintenance import Maintenance, MaintenanceOptions
from conveyor.worker.options import WorkerOptions
from conveyor.worker.runtime import Worker

ENTERPRISE_CAP = 40
"""Running tasks per role allowed to the demo's enterprise tenant (its plan has no cap)."""

ROLE_MIX = {  # share of submitted tasks per role, after WORKLOADS.md
    "copywriter": 0.30,
    "seo": 0.20,
    "social": 0.15,
    "analyst": 0.12,
    "paid_ads": 0.10,
    "researcher": 0.08,
    "activity_planner": 0.05,
}


def _plan_tasks(count: int, tenants: list[str], rng: random.Random) -> list[NewTask]:
    roles, weights = zip(*ROLE_MIX.items(), strict=True)
    enterprise = tenants[0]  # the noisy neighbour: a third of all tasks, submitted first
    tasks = []
    for i in range(count):
        role = rng.choices(roles, weights)[0]
        tenant = enterprise if i < count // 3 else rng.choice(tenants[1:] or tenants)
        payload: dict[str, object] = {"campaign": f"c{i % 40}", "brief": f"brief #{i}"}
        if rng.random() < 0.05:
            payload["flaky"] = True
        if rng.random() < 0.01:
            payload["bad_brief"] = True
        # same priority for everyone: fair dequeue, not priority, keeps the flood in its lane
        priority = Priority.URGENT if role == "activity_planner" else Priority.NORMAL
        delay = timedelta(seconds=1) if rng.random() < 0.05 else None
        tasks.append(
            NewTask(
                queue=role,
                payload=payload,
                tenant_id=tenant,
                priority=priority,
                run_at=datetime.now(UTC) + delay if delay else None,
                max_attempts=3,
                idempotency_key=f"demo-{i}",
                group_id=f"{tenant}:{payload['campaign']}",
            )
        )
    return tasks


def _progress(statuses: list[tuple[str, int, int, int, int]], done: int, total: int) -> Table:
    table = Table(title=f"processing: {done} finished ({total} submitted, plus spawned)")
    for column in ("queue", "queued", "scheduled", "running", "dead"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for row in statuses:
        table.add_row(*(str(v) for v in row))
    return table


async def _crashed_worker(store: PostgresStore) -> int:
    """Claim a few tasks as a worker that then dies: their leases expire and come back."""
    claimed = await store.claim(ClaimRequest(("copywriter",), 5, "crashed-worker", 1.0))
    return len(claimed)


async def _drain(
    store: PostgresStore,
    total: int,
    console: Console,
    started: datetime,
    peaks: dict[tuple[str, str], int],
) -> None:
    """Show progress until nothing is left; ``peaks`` collects the most running per
    (tenant, role) seen, to show the plan caps holding."""
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        while True:
            for key, running in (await store.running_by_tenant()).items():
                peaks[key] = max(peaks.get(key, 0), running)
            statuses = await store.queue_status()
            summary = await store.history_summary(started)
            done = sum(s.succeeded + s.dead + s.cancelled for s in summary)
            rows = [(s.queue, s.queued, s.scheduled, s.running, s.dead) for s in statuses]
            live.update(_progress(rows, done, total))
            if all(s.queued + s.scheduled + s.running == 0 for s in statuses):
                return
            await asyncio.sleep(0.25)


async def run_demo(settings: Settings, *, tasks: int, tenants: int, console: Console) -> None:
    """The whole demo; prints a summary table at the end."""
    with demo_provider() as provider:
        await _run_demo(settings, tasks, tenants, console, provider)


async def _run_demo(
    settings: Settings, tasks: int, tenants: int, console: Console, provider: DemoProvider
) -> None:
    rng = random.Random(7)
    agents.briefs_fixed = False
    agents.calls.clear()
    # The demo's failures are staged (503s, bad briefs) and counted in its summary; one
    # task_failed warning each would scroll the live table away.
    configure_logging("ERROR", json_lines=False)
    # 200 agents each writing durable steps: give the pool room for them
    roomy = settings.model_copy(update={"pool_max_size": max(settings.pool_max_size, 40)})
    async with open_store(roomy, auto_migrate=True) as store:
        where = "embedded PostgreSQL" if settings.database_url is None else "DATABASE_URL"
        console.print(
            f"[bold]Conveyor demo[/bold] on {where}: {tasks} agent tasks, {tenants} tenants; "
            f"models: {provider.description}"
        )
        gateway = Gateway.with_store(provider.config, store)  # closed once the worker stops
        names = [f"enterprise-{i}" for i in range(1)] + [f"agency-{i}" for i in range(tenants - 1)]
        # The noisy neighbour is an enterprise tenant with a cap of its own per role; the
        # agencies are on the agency plan (4 running per role).
        for name in names:
            plan = "enterprise" if name.startswith("enterprise") else "agency"
            await store.create_tenant(name, name.replace("-", " ").title(), plan=plan)
        for role in ROLE_MIX:
            await store.set_tenant_agent(
                TenantAgentUpdate(names[0], role, max_concurrent=ENTERPRISE_CAP)
            )
        started = datetime.now(UTC)
        run_id = started.strftime("%H%M%S%f")
        planned = [
            replace(t, idempotency_key=f"{t.idempotency_key}-{run_id}")
            for t in _plan_tasks(tasks, names, rng)
        ]
        t0 = time.perf_counter()
        results = await store.enqueue_batch(planned)
        enqueue_s = time.perf_counter() - t0
        again = await store.enqueue_batch(planned[:100])
        console.print(
            f"submitted {sum(r.created for r in results)} tasks in one call "
            f"({len(planned) / enqueue_s:,.0f} tasks/s); resubmitting 100 with the same "
            f"idempotency keys created {sum(r.created for r in again)}"
        )
        lost = await _crashed_worker(store)
        console.print(f"a worker claimed {lost} tasks and crashed; their leases will expire in 1 s")

        stop = asyncio.Event()
        worker = Worker(
            agents.app,
            store,
            WorkerOptions(
                concurrency=200, heartbeat_seconds=0.5, lease_seconds=5, poll_seconds=0.5
            ),
            llm=gateway,
        )
        upkeep = asyncio.create_task(
            Maintenance(
                store, options=MaintenanceOptions(promote_seconds=0.2, reaper_seconds=0.5)
            ).run()
        )
        running = asyncio.create_task(worker.run(stop))
        t1 = time.perf_counter()
        peaks: dict[tuple[str, str], int] = {}
        await _drain(store, tasks, console, started, peaks)
        process_s = time.perf_counter() - t1

        dead = await store.list_dead(limit=1000)
        ours = [d for d in dead if d.finished_at >= started]
        agents.briefs_fixed = True
        replayed = (
            await store.replay_dead(ReplayFilter(task_ids=tuple(d.id for d in ours)))
            if ours
            else []
        )
        await _drain(store, tasks, console, started, peaks)
        stop.set()
        await running
        await gateway.aclose()  # writes the rest of the call log, which the report reads
        upkeep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upkeep

        summary = await store.history_summary(started)
        outcome = report.Outcome(
            submitted=tasks,
            seconds=process_s,
            retried=worker.stats["retried"],
            died=Counter(d.queue for d in ours),
            replayed=len(replayed),
            redelivered=lost,
        )
        report.print_queues(console, summary, outcome)
        await report.print_fairness(console, store, started, names[0], ENTERPRISE_CAP, peaks)
        saved = agents.calls["requested"] - agents.calls["executed"]
        await report.print_llm_usage(store, names, started, provider, console)
        console.print(
            f"{agents.calls['executed']} model calls ran; {saved} were replayed from durable "
            "steps on retries instead of being paid for twice."
        )
