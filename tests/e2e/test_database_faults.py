"""Workers survive the database: restarts in both modes and a SIGKILLed worker lose nothing.

Three real ``conveyor worker`` processes serve 3,000 tasks submitted in waves over 30 s to
a PostgreSQL server of the test's own, which is restarted with ``pg_ctl restart -m fast``
and later ``-m immediate`` (down for a second each time), while one worker is SIGKILLed in
between (and replaced). Every fault waits for a wave in flight. Each
task makes one transactional effect (``tests/e2e/chaos_agents.py``); 1 in 100 is poison.

Afterwards every task is accounted for (``tests/support/chaos_accounting.py``): all
succeeded but the poison ones, which are dead; nothing lost or left in ``tasks``; every
effect exactly once; and no attempt charged for a restart, exactly: a task has one
attempt, plus one per run of it that the SIGKILL interrupted. The workers still running
were never down, and exit 0 on SIGTERM.

Tests never assert on timing: the schedule only places the faults while work is in flight.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.chaos import Fault, Scenario, Workload, run_scenario
from tests.support.private_postgres import PrivatePostgres
from tests.support.worker_fleet import FleetOptions

SCENARIO = Scenario(
    # waves of 300 every 3 s: each wave fills the workers' slots for a moment, and every
    # fault waits for such a moment (fault_min_running)
    workload=Workload(tasks=3000, submit_seconds=30, batch=300, poison_every=100),
    fleet=FleetOptions(
        app="tests.e2e.chaos_agents:app",
        concurrency=64,
        lease_seconds=10,
        heartbeat_seconds=2,
        reaper_seconds=1,
        poll_seconds=0.5,
    ),
    workers=3,
    faults=(
        Fault(7, "restart_fast"),
        Fault(14, "kill_worker"),
        Fault(20, "restart_immediate"),
    ),
    fault_min_running=60,
    down_seconds=1.0,
    drain_timeout=90,
)


@pytest.mark.slow
@pytest.mark.timeout(360)
async def test_workers_survive_restarts_and_a_sigkill(tmp_path: Path) -> None:
    with PrivatePostgres() as server:
        report = await run_scenario(server, SCENARIO, tmp_path / "workers")
    print(report.summary())
    acc = report.accounting
    logs = f"worker logs in {tmp_path / 'workers'}; {report.summary()}"

    assert [f.kind for f in report.faults] == [f.kind for f in SCENARIO.faults], logs
    assert report.drained, f"the queue did not drain: {dict(acc.examples)}; {logs}"
    assert acc.submitted == SCENARIO.workload.tasks
    # nothing lost, stuck or doubled; the poison tasks and only they are dead
    for problem in ("lost", "stuck", "dead", "poison_not_dead", "cancelled", "finished_twice"):
        assert getattr(acc, problem) == 0, f"{problem}: {acc.examples[problem]}; {logs}"
    assert acc.succeeded + acc.poison_dead == acc.submitted
    assert acc.poison_dead == SCENARIO.workload.tasks // SCENARIO.workload.poison_every
    assert acc.unexpected_tasks == 0, f"{acc.examples['unexpected_tasks']}; {logs}"
    # every effect exactly once, by its own task
    for problem in ("doubled_effects", "missing_effects", "stray_effects", "result_mismatch"):
        assert getattr(acc, problem) == 0, f"{problem}: {acc.examples[problem]}; {logs}"
    # the SIGKILL interrupted work, and only it cost attempts
    [killed] = report.killed
    assert acc.interrupted > 0, f"the SIGKILL of {killed} interrupted no task; {logs}"
    never = acc.examples["attempts_over_never_on_killed"]
    assert acc.attempts_over_never_on_killed == 0, f"charged for a restart: {never}; {logs}"
    assert acc.attempts_over == 0, f"{acc.examples['attempts_over']}; {logs}"
    assert acc.attempts_under == 0, f"{acc.examples['attempts_under']}; {logs}"
    # no worker died on its own; each stops cleanly
    assert report.silent_deaths == {}, logs
    assert report.exit_codes and set(report.exit_codes.values()) == {0}, logs
