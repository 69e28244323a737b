"""Chaos: does the queue keep its promises while workers die and PostgreSQL restarts?

One workload runs twice, each time on a fresh database of a private PostgreSQL server
(``tests/support/private_postgres.py``, so the faults touch nothing else) served by
``--workers`` real ``conveyor worker`` processes:

1. baseline: no faults;
2. under faults: a SIGKILL of a random worker every 5-10 s, every ``--sigterm-every``-th
   time a SIGTERM instead, a replacement started after each; and PostgreSQL restarts,
   ``pg_ctl restart -m fast`` and ``-m immediate`` in turn, at least one of each, spread
   over the baseline's run time about ``--restart-every`` seconds apart, each down for
   ``--down-seconds``. Worker faults span the baseline's run time (at least
   ``--min-window`` s); faults not due by the time the queue drains are skipped.

Each task sleeps ``--task-ms-min`` to ``--task-ms-max`` (500-1500 ms, an agent's call
length), then writes one row through ``ctx.once_in_transaction``
(``tests/e2e/chaos_agents.py``); every ``--poison-every``-th task fails for good. The
scenario and the accounting are the e2e test's (``tests/support/chaos.py``,
``tests/support/chaos_accounting.py``). The rows of the table:

- submitted: tasks whose submission was acknowledged (a batch whose commit went
  unacknowledged in a restart is resubmitted under the same idempotency keys);
- succeeded; dead: tasks that are not poison but were dead-lettered; poison dead: poison
  tasks dead-lettered, as they should be;
- lost: acknowledged, then in neither ``tasks`` nor ``task_history``;
- stuck: still in ``tasks`` (queued, scheduled or running) after ``--drain-timeout``;
- doubled effects: ``chaos_effects`` rows beyond one per task; missing effects: succeeded
  tasks without their row;
- attempts over limit: tasks charged more attempts than their SIGKILLs explain, and the
  surplus. A claim is recorded by a trigger in the claim's own transaction; a claim is
  *interrupted by a SIGKILL* when its worker was SIGKILLed, it is not the run that
  finished the task, and the task's next claim came at or after the kill (or the reaper
  finished the task as dead after it). Expected attempts = 1 + interrupted claims; the
  rest were charged for something else (a restart, a lease lost by a live worker);
- silent deaths: workers that exited on their own; unclean exits: workers that did not
  exit 0 on SIGTERM (mid-run or at the end);
- last fault to drain: from the end of the last fault to the last finished task (it
  includes the lease a SIGKILLed worker's tasks wait out);
- throughput: finished tasks per second from the first submission to the last finish,
  and under faults as a share of the baseline.

Benchmarks print tables; they never assert.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

# the scenario lives with the e2e test it shares: make the repo root importable
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.chaos import Fault, FaultKind, RunReport, Scenario, Workload, run_scenario
from tests.support.private_postgres import PrivatePostgres
from tests.support.worker_fleet import FleetOptions


def fault_schedule(
    baseline_seconds: float, args: argparse.Namespace, rng: random.Random
) -> list[Fault]:
    """Worker faults every 5-10 s over max(baseline, ``--min-window``) seconds, and
    PostgreSQL restarts, fast and immediate in turn, spread over the baseline's run time
    (the faulted run takes at least as long, so both modes happen)."""
    faults: list[Fault] = []
    at, count = rng.uniform(5, 10), 0
    while at < max(baseline_seconds, args.min_window):
        count += 1
        sigterm = args.sigterm_every > 0 and count % args.sigterm_every == 0
        faults.append(Fault(at, "terminate_worker" if sigterm else "kill_worker"))
        at += rng.uniform(5, 10)
    restarts = max(2, round(baseline_seconds / args.restart_every))
    for i in range(restarts):
        mode: FaultKind = "restart_fast" if i % 2 == 0 else "restart_immediate"
        faults.append(Fault(baseline_seconds * (i + 0.5) / restarts, mode))
    return sorted(faults, key=lambda f: f.at)


def scenario(args: argparse.Namespace, faults: list[Fault], seed: int) -> Scenario:
    return Scenario(
        workload=Workload(
            tasks=args.tasks,
            submit_seconds=args.submit_seconds,
            batch=1000,
            poison_every=args.poison_every,
            min_ms=args.task_ms_min,
            max_ms=args.task_ms_max,
            seed=seed,
        ),
        fleet=FleetOptions(
            app="tests.e2e.chaos_agents:app",
            concurrency=args.concurrency,
            lease_seconds=args.lease_seconds,
            heartbeat_seconds=args.lease_seconds / 5,
            reaper_seconds=1.0,
            poll_seconds=0.5,
        ),
        workers=args.workers,
        faults=tuple(faults),
        drain_timeout=args.drain_timeout,
        kill_busiest=False,
        down_seconds=args.down_seconds,
        seed=seed,
    )


def unclean_exits(report: RunReport) -> int:
    codes = [*report.exit_codes.values(), *report.terminated.values()]
    return sum(1 for code in codes if code != 0)


def results_table(baseline: RunReport, faulted: RunReport) -> Table:
    table = Table(title="Conveyor under faults")
    table.add_column("")
    table.add_column("baseline", justify="right")
    table.add_column("under faults", justify="right")

    def row(name: str, show: Callable[[RunReport], object]) -> None:
        table.add_row(name, str(show(baseline)), str(show(faulted)))

    row("submitted", lambda r: f"{r.accounting.submitted:,}")
    row("succeeded", lambda r: f"{r.accounting.succeeded:,}")
    row("dead (not poison)", lambda r: r.accounting.dead)
    row("poison dead (expected)", lambda r: r.accounting.poison_dead)
    row("lost", lambda r: r.accounting.lost)
    row("stuck", lambda r: r.accounting.stuck)
    row("doubled effects", lambda r: r.accounting.doubled_effects)
    row("missing effects", lambda r: r.accounting.missing_effects)
    row(
        "attempts over limit (tasks / surplus)",
        lambda r: f"{r.accounting.attempts_over} / {r.accounting.extra_attempts}",
    )
    row("tasks a SIGKILL interrupted", lambda r: r.accounting.interrupted)
    row("other problems", lambda r: _other_problems(r) or "none")
    row("silent worker deaths", lambda r: len(r.silent_deaths))
    row("unclean exits on SIGTERM", unclean_exits)
    row("enqueue retries", lambda r: r.enqueue_retries)
    row("faults", lambda r: _fault_counts(r) or "none")
    row(
        "last fault to drain",
        lambda r: "-" if r.drain_after_last_fault is None else f"{r.drain_after_last_fault:.1f} s",
    )
    row("run time", lambda r: f"{r.seconds:.1f} s")
    row("throughput", lambda r: f"{r.throughput:,.0f} tasks/s")
    share = faulted.throughput / baseline.throughput if baseline.throughput else 0.0
    table.add_row("throughput, share of baseline", "100%", f"{share:.0%}")
    return table


def _other_problems(report: RunReport) -> str:
    shown = {"dead", "lost", "stuck", "doubled_effects", "missing_effects", "attempts_over"}
    rest = {k: v for k, v in report.accounting.problems().items() if k not in shown}
    return ", ".join(f"{k} {v}" for k, v in rest.items())


def _fault_counts(report: RunReport) -> str:
    counts = Counter(f.kind for f in report.faults)
    return ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(counts.items()))


def faults_table(report: RunReport) -> Table:
    table = Table(title="faults injected")
    for column in ("at", "fault", "took", "what"):
        table.add_column(column, justify="right" if column in ("at", "took") else "left")
    for fault in report.faults:
        table.add_row(f"{fault.at:.1f} s", fault.kind, f"{fault.took:.2f} s", fault.detail)
    return table


async def main(args: argparse.Namespace) -> None:
    console = Console(width=120)
    logs = Path(args.logs or tempfile.mkdtemp(prefix="conveyor-chaos-"))
    rng = random.Random(args.seed)
    console.print(
        f"[bold]Conveyor chaos[/bold]: {args.tasks:,} tasks, {args.workers} workers x "
        f"{args.concurrency}; {os.cpu_count()} cores; worker logs in {logs}"
    )
    with PrivatePostgres() as server:
        baseline = await run_scenario(
            server, scenario(args, [], args.seed), logs / "baseline", database="baseline"
        )
        console.print(f"baseline: {baseline.summary()}")
        faults = fault_schedule(baseline.seconds, args, rng)
        faulted = await run_scenario(
            server, scenario(args, faults, args.seed), logs / "faults", database="faults"
        )
    console.print(faults_table(faulted))
    console.print(results_table(baseline, faulted))
    for name, report in (("baseline", baseline), ("under faults", faulted)):
        for problem, examples in report.accounting.examples.items():
            console.print(f"{name}, {problem}: {'; '.join(examples)}")
    events = ", ".join(f"{e} {n}" for e, n in faulted.events.most_common())
    console.print(f"worker log events under faults: {events or 'none'}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per run")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=128, help="tasks in flight a worker")
    parser.add_argument(
        "--submit-seconds", type=float, default=0.0, help="spread submission (0: all at once)"
    )
    # agent-like runs (shared/WORKLOADS.md: seconds of LLM time); 20-100 ms tasks make a
    # 9 s baseline in which one lease of waiting after a SIGKILL dominates the share
    parser.add_argument("--task-ms-min", type=int, default=500, help="shortest task (ms)")
    parser.add_argument("--task-ms-max", type=int, default=1500, help="longest task (ms)")
    parser.add_argument("--poison-every", type=int, default=100, help="every n-th fails for good")
    parser.add_argument("--lease-seconds", type=float, default=10.0, help="worker lease")
    parser.add_argument(
        "--sigterm-every", type=int, default=3, help="every n-th worker fault is a SIGTERM"
    )
    parser.add_argument("--restart-every", type=float, default=15.0, help="s between restarts")
    parser.add_argument("--down-seconds", type=float, default=1.0, help="downtime per restart")
    parser.add_argument(
        "--min-window", type=float, default=30.0, help="worker faults span at least this"
    )
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="after the faults")
    parser.add_argument("--seed", type=int, default=1, help="payloads and fault schedule")
    parser.add_argument("--logs", help="folder for worker logs (default: a new temp folder)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
