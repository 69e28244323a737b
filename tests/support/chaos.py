"""A fault run: submit a workload to real workers, inject faults on a schedule, account.

Shared by ``tests/e2e/test_database_faults.py`` (a short run that asserts) and
``benchmarks/chaos.py`` (long runs that print a table). One run:

1. a fresh database on a :class:`PrivatePostgres`, migrated, plus the ``chaos_effects``
   table of ``tests/e2e/chaos_agents.py`` and the claim record of ``chaos_accounting``;
2. ``workers`` real ``conveyor worker`` processes (:class:`WorkerFleet`);
3. the workload submitted in batches spread over ``submit_seconds`` (0: all at once), each
   task with an idempotency key, so a batch whose commit went unacknowledged in a restart
   is submitted again without making a second task;
4. meanwhile the faults, in order, each at its time after the start: PostgreSQL restarts
   (``fast``, ``immediate``), a SIGKILL of a worker or a SIGTERM of one, each followed by
   a replacement. Faults not yet due when the queue has drained are skipped;
5. a bounded wait for the queue to drain, then the accounting of every task.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from conveyor.errors import DatabaseUnavailable
from conveyor.store.connection import connect
from conveyor.store.migrate import migrate
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from tests.e2e.chaos_agents import SCHEMA as AGENT_SCHEMA
from tests.support import retrying_db
from tests.support.chaos_accounting import HARNESS_SCHEMA, Accounting, Submitted, account
from tests.support.private_postgres import PrivatePostgres
from tests.support.worker_fleet import FleetOptions, KilledWorker, WorkerFleet

APP = "tests.e2e.chaos_agents:app"
QUEUE = "chaos"

_RUNNING = "SELECT count(*) FROM tasks WHERE state = 'running'"

FaultKind = Literal["restart_fast", "restart_immediate", "kill_worker", "terminate_worker"]


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault, ``at`` seconds after the workload starts."""

    at: float
    kind: FaultKind


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """A fault as it happened: when (seconds after the start), for how long, to whom."""

    kind: FaultKind
    at: float
    took: float
    detail: str


@dataclass(frozen=True, slots=True)
class Workload:
    """What is submitted; every field documents its default."""

    tasks: int
    submit_seconds: float = 0.0
    """Spread the submission over this long (0: everything at once, as fast as it goes)."""
    batch: int = 100
    """Tasks per enqueue call."""
    poison_every: int = 0
    """Every n-th task fails for good (0: none); it must end dead after one attempt."""
    min_ms: int = 20
    max_ms: int = 100
    """Each task sleeps a random whole number of milliseconds in this range."""
    seed: int = 0

    def payloads(self) -> list[dict[str, Any]]:
        """The tasks' payloads, the same for the same seed."""
        rng = random.Random(self.seed)
        return [
            {
                "n": n,
                "ms": rng.randint(self.min_ms, self.max_ms),
                "poison": self.poison_every > 0 and n % self.poison_every == 0,
            }
            for n in range(self.tasks)
        ]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole fault run."""

    workload: Workload
    fleet: FleetOptions = field(default_factory=lambda: FleetOptions(app=APP))
    workers: int = 3
    faults: tuple[Fault, ...] = ()
    drain_timeout: float = 60.0
    """After the submission and the faults, how long the queue may take to drain."""
    fault_min_running: int = 0
    """Before each fault, wait (``fault_wait`` seconds at most) until this many tasks are
    running: a fault should hit work in flight, not an idle moment between batches."""
    fault_wait: float = 5.0
    kill_busiest: bool = True
    """SIGKILL the worker holding the most tasks (else a random one)."""
    down_seconds: float = 0.0
    """How long PostgreSQL stays down in a restart (a real restart of a loaded server, or
    a failover, takes seconds: work in flight must meet a database that is gone)."""
    seed: int = 0


@dataclass(slots=True)
class RunReport:
    """What a fault run did and found."""

    accounting: Accounting
    faults: list[FaultRecord]
    killed: list[KilledWorker]
    terminated: dict[str, int]
    """Exit status of each worker SIGTERMed mid-run."""
    enqueue_retries: int
    drained: bool
    seconds: float
    """From the first submission to the last finished task."""
    drain_after_last_fault: float | None
    """From the end of the last fault to the last finished task."""
    silent_deaths: dict[str, int]
    """Workers that exited on their own while they should have been serving."""
    exit_codes: dict[str, int]
    """Exit status of each worker still live at the end, after SIGTERM."""
    events: Counter[str]
    """Worker log events, summed over every worker of the run."""

    @property
    def throughput(self) -> float:
        """Finished tasks per second, first submission to last finish."""
        done = self.accounting.succeeded + self.accounting.poison_dead + self.accounting.dead
        return done / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for the log."""
        acc = self.accounting
        kinds = Counter(f.kind for f in self.faults)
        faults = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"
        drain = self.drain_after_last_fault
        return (
            f"chaos: {acc.submitted} submitted, {acc.succeeded} succeeded, "
            f"{acc.poison_dead} poison dead, {acc.interrupted} interrupted by SIGKILL; "
            f"faults: {faults}; {self.enqueue_retries} enqueue retries; "
            f"{self.seconds:.1f}s, {self.throughput:.0f} tasks/s; "
            f"last finish {'-' if drain is None else f'{drain:.1f}s'} after the last fault; "
            f"problems: {acc.problems() or 'none'}; "
            f"silent deaths: {self.silent_deaths or 'none'}; exits: {self.exit_codes}; "
            f"worker log events: {dict(self.events)}"
        )


async def create_database(server: PrivatePostgres, name: str) -> str:
    """A fresh database ``name`` with Conveyor's schema and the harness tables; its DSN."""
    admin = await connect(server.dsn("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = server.dsn(name)
    conn = await connect(dsn)
    try:
        await migrate(conn)
        await conn.execute(AGENT_SCHEMA)
        await conn.execute(HARNESS_SCHEMA)
    finally:
        await conn.close()
    return dsn


async def run_scenario(
    server: PrivatePostgres, scenario: Scenario, log_dir: Path, *, database: str = "chaos"
) -> RunReport:
    """Run ``scenario`` on a fresh database of ``server``; worker logs go to ``log_dir``."""
    dsn = await create_database(server, database)
    log_dir.mkdir(parents=True, exist_ok=True)
    fleet = WorkerFleet(dsn, scenario.fleet, log_dir)
    try:
        await fleet.start(scenario.workers)
        began, began_wall = time.monotonic(), datetime.now(UTC)
        submitted_all = asyncio.Event()
        producer = asyncio.create_task(_submit(dsn, scenario.workload, began, submitted_all))
        injector = _FaultInjector(server, fleet, scenario, began, submitted_all)
        try:
            faults = await injector.run()
            submitted, retries = await producer
        finally:
            producer.cancel()  # a no-op once it finished; else the run failed
        drained = await _wait_drained(dsn, scenario.drain_timeout)
        acc = await account(dsn, submitted, fleet.killed)
        silent = fleet.silent_deaths()
        events = fleet.events()
        codes = await fleet.stop_all()
    finally:
        fleet.close()
    finished = acc.last_finished
    seconds = (finished - began_wall).total_seconds() if finished else 0.0
    last_fault_end = max((f.at + f.took for f in faults), default=None)
    return RunReport(
        accounting=acc,
        faults=faults,
        killed=list(fleet.killed),
        terminated=dict(injector.terminated),
        enqueue_retries=retries,
        drained=drained,
        seconds=seconds,
        drain_after_last_fault=(
            max(seconds - last_fault_end, 0.0) if last_fault_end is not None else None
        ),
        silent_deaths=silent,
        exit_codes=codes,
        events=events,
    )


async def _submit(
    dsn: str, workload: Workload, began: float, done: asyncio.Event
) -> tuple[list[Submitted], int]:
    """Submit the workload in paced batches; what was acknowledged, and how many retries."""
    payloads = workload.payloads()
    batches = [payloads[i : i + workload.batch] for i in range(0, len(payloads), workload.batch)]
    interval = workload.submit_seconds / len(batches) if batches else 0.0
    store = await PostgresStore.open(dsn, min_size=0, max_size=2)  # no floor to restore
    submitted: list[Submitted] = []
    retries = 0
    try:
        for index, batch in enumerate(batches):
            await asyncio.sleep(max(0.0, began + index * interval - time.monotonic()))
            tasks = [
                NewTask(queue=QUEUE, payload=p, idempotency_key=f"chaos:{p['n']}") for p in batch
            ]
            while True:
                try:
                    results = await store.enqueue_batch(tasks)
                    break
                except DatabaseUnavailable:  # a restart: the same keys make no second task
                    retries += 1
                    await asyncio.sleep(0.2)
            submitted += [
                Submitted(p["n"], r.task_id, p["poison"])
                for p, r in zip(batch, results, strict=True)
            ]
    finally:
        done.set()
        await store.close()
    return submitted, retries


async def _wait_drained(dsn: str, timeout: float) -> bool:
    """Wait until ``tasks`` is empty (every task finished, or lost); False on timeout."""
    deadline = time.monotonic() + timeout
    while await retrying_db.fetchval(dsn, "SELECT count(*) FROM tasks") > 0:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


class _FaultInjector:
    """Applies a scenario's faults in order, each at its time, until the queue drains."""

    def __init__(
        self,
        server: PrivatePostgres,
        fleet: WorkerFleet,
        scenario: Scenario,
        began: float,
        submitted_all: asyncio.Event,
    ) -> None:
        self.server = server
        self.fleet = fleet
        self.scenario = scenario
        self.began = began
        self.submitted_all = submitted_all
        self.rng = random.Random(scenario.seed)
        self.terminated: dict[str, int] = {}

    async def run(self) -> list[FaultRecord]:
        done: list[FaultRecord] = []
        for fault in sorted(self.scenario.faults, key=lambda f: f.at):
            if not await self._wait_until(self.began + fault.at):
                break  # drained before this fault was due
            running = await self._wait_for_load()
            start = time.monotonic()
            detail = f"{await self._apply(fault.kind)}; {running} tasks running before"
            took = time.monotonic() - start
            done.append(FaultRecord(fault.kind, start - self.began, took, detail))
        return done

    async def _wait_until(self, due: float) -> bool:
        """Sleep until ``due``; False if the workload was submitted and drained first."""
        while (left := due - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.5))
            if self.submitted_all.is_set() and not await retrying_db.fetchval(
                self.fleet.dsn, "SELECT count(*) FROM tasks"
            ):
                return False
        return True

    async def _wait_for_load(self) -> int:
        """Wait a little for the scenario's ``fault_min_running``; how many run now."""
        deadline = time.monotonic() + self.scenario.fault_wait
        while True:
            running = int(await retrying_db.fetchval(self.fleet.dsn, _RUNNING))
            if running >= self.scenario.fault_min_running or time.monotonic() > deadline:
                return running
            await asyncio.sleep(0.01)

    async def _apply(self, kind: FaultKind) -> str:
        if kind in ("restart_fast", "restart_immediate"):
            mode: Literal["fast", "immediate"] = "fast" if kind == "restart_fast" else "immediate"
            await asyncio.to_thread(
                self.server.restart, mode, down_seconds=self.scenario.down_seconds
            )
            return f"pg_ctl restart -m {mode}"
        if kind == "kill_worker":
            victim = await self.fleet.pick(self.rng, busiest=self.scenario.kill_busiest)
            killed = await self.fleet.kill(victim)
            [replacement] = await self.fleet.start(1)
            return f"SIGKILL {victim.name} holding {killed.held}; {replacement.name} started"
        victim = await self.fleet.pick(self.rng, busiest=False)
        code = await self.fleet.terminate(victim)
        self.terminated[victim.name] = code
        [replacement] = await self.fleet.start(1)
        return f"SIGTERM {victim.name} (exit {code}); {replacement.name} started"
