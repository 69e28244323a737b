"""The final accounting of a fault run: what became of every submitted task.

Which tasks may have been charged an extra attempt is decided from a record of every
claim. A trigger on ``tasks`` (``HARNESS_SCHEMA``, installed in the run's database only)
writes one ``chaos_claims`` row per new lease, in the claim's own transaction: a claim
that committed is recorded, one that rolled back (a restart mid-claim) is not. Snapshots
of ``tasks`` taken from outside would race with the workers' claims; the trigger cannot.

A claim is **interrupted by a SIGKILL** when the worker that made it was SIGKILLed, the
claim is not the run that finished the task, and the task's next claim came at or after
the kill (the lease had to expire first). The reaper counts such an attempt, rightly. So

    expected attempts = 1 + the task's claims interrupted by a SIGKILL

and every attempt beyond that was charged for something else (a database restart, a lost
lease while its worker lived): an attempt over the limit. A task whose last claim was
interrupted and which the reaper then finished as dead counts that claim too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime

from asyncpg import Record

from tests.support import retrying_db
from tests.support.worker_fleet import KilledWorker

HARNESS_SCHEMA = """
CREATE TABLE chaos_claims (
    task_id      bigint NOT NULL,
    worker_id    text,
    attempts     integer NOT NULL,
    lease_token  bigint NOT NULL,
    claimed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION chaos_record_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.chaos_claims (task_id, worker_id, attempts, lease_token)
    VALUES (NEW.id, NEW.worker_id, NEW.attempts, NEW.lease_token);
    RETURN NULL;
END
$$;
CREATE TRIGGER chaos_record_claim AFTER UPDATE OF lease_token ON tasks
FOR EACH ROW WHEN (NEW.lease_token IS NOT NULL AND NEW.lease_token IS DISTINCT FROM OLD.lease_token)
EXECUTE FUNCTION chaos_record_claim();
"""
"""Installed after Conveyor's migrations in a fault run's database: the claim record."""

_AUDIT = """
WITH submitted AS (
    SELECT * FROM unnest($1::int[], $2::bigint[], $3::bool[]) AS s(n, task_id, poison)
), kills AS (
    SELECT * FROM unnest($4::text[], $5::timestamptz[]) AS k(worker_id, killed_at)
), ordered AS (
    SELECT c.task_id, c.worker_id,
           lead(c.claimed_at) OVER (
               PARTITION BY c.task_id ORDER BY c.claimed_at, c.lease_token) AS next_claim_at
    FROM chaos_claims AS c
), claims AS (
    SELECT o.task_id,
           count(*) AS claims,
           count(k.worker_id) AS by_killed,
           count(*) FILTER (
               WHERE k.worker_id IS NOT NULL AND (
                   o.next_claim_at >= k.killed_at
                   OR (o.next_claim_at IS NULL AND EXISTS (
                       SELECT 1 FROM task_history AS h
                       WHERE h.id = o.task_id AND h.state = 'dead'
                         AND h.last_error->>'type' = 'LeaseExpired'))))
               AS interrupted
    FROM ordered AS o LEFT JOIN kills AS k USING (worker_id)
    GROUP BY o.task_id
), effects AS (
    SELECT key, count(*) AS rows, array_agg(DISTINCT task_id) AS by_tasks
    FROM chaos_effects GROUP BY key
)
SELECT s.n, s.task_id, s.poison,
       coalesce(h.state, t.state) AS state,
       coalesce(h.attempts, t.attempts) AS attempts,
       (h.result->>'attempt')::int AS result_attempt,
       h.finished_at, h.started_at,
       (SELECT count(*) FROM task_history AS h2 WHERE h2.id = s.task_id) AS history_rows,
       coalesce(e.rows, 0) AS effect_rows, e.by_tasks,
       coalesce(c.claims, 0) AS claims, coalesce(c.by_killed, 0) AS by_killed,
       coalesce(c.interrupted, 0) AS interrupted
FROM submitted AS s
LEFT JOIN LATERAL (
    SELECT * FROM task_history AS h WHERE h.id = s.task_id ORDER BY finished_at DESC LIMIT 1
) AS h ON true
LEFT JOIN tasks AS t ON t.id = s.task_id
LEFT JOIN effects AS e ON e.key = 'effect:' || s.n
LEFT JOIN claims AS c ON c.task_id = s.task_id
ORDER BY s.n
"""

_TOTAL_ROWS = "SELECT (SELECT count(*) FROM tasks) + (SELECT count(*) FROM task_history)"


@dataclass(frozen=True, slots=True)
class Submitted:
    """A task the workload submitted and the store acknowledged."""

    n: int
    task_id: int
    poison: bool


@dataclass(slots=True)
class Accounting:
    """Counts over every submitted task; ``problems()`` are the ones that must be zero."""

    submitted: int = 0
    succeeded: int = 0
    poison_dead: int = 0
    """Poison tasks dead-lettered, as they should be."""
    interrupted: int = 0
    """Tasks with a run interrupted by a SIGKILL of their worker (extra attempt expected)."""
    dead: int = 0
    """Tasks that should have succeeded but were dead-lettered."""
    poison_not_dead: int = 0
    cancelled: int = 0
    lost: int = 0
    """Acknowledged at submission, then in neither ``tasks`` nor ``task_history``."""
    stuck: int = 0
    """Still in ``tasks`` (queued, scheduled or running) after the drain timeout."""
    finished_twice: int = 0
    """Tasks with more than one ``task_history`` row."""
    unexpected_tasks: int = 0
    """Task rows nobody submitted (a submission that was applied twice)."""
    doubled_effects: int = 0
    """Effect rows beyond one per key."""
    missing_effects: int = 0
    """Succeeded tasks without their effect row."""
    stray_effects: int = 0
    """Effect rows of a poison task, or written under another task's id."""
    result_mismatch: int = 0
    """Succeeded tasks whose result names another attempt than the one recorded."""
    attempts_over: int = 0
    """Tasks charged more attempts than 1 + their runs interrupted by a SIGKILL."""
    extra_attempts: int = 0
    """The sum of those surplus attempts."""
    attempts_over_never_on_killed: int = 0
    """Of ``attempts_over``: tasks no SIGKILLed worker ever claimed (expected exactly 1)."""
    attempts_under: int = 0
    """Tasks with fewer attempts than their interrupted runs imply."""
    first_started: datetime | None = None
    last_finished: datetime | None = None
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """Up to five example tasks per problem, for the failure message."""

    _MUST_BE_ZERO = (
        "dead",
        "poison_not_dead",
        "cancelled",
        "lost",
        "stuck",
        "finished_twice",
        "unexpected_tasks",
        "doubled_effects",
        "missing_effects",
        "stray_effects",
        "result_mismatch",
        "attempts_over",
        "attempts_under",
    )

    def problems(self) -> dict[str, int]:
        """Every count that must be zero and is not."""
        return {name: getattr(self, name) for name in self._MUST_BE_ZERO if getattr(self, name)}

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "examples"}

    def _flag(self, problem: str, amount: int, example: str) -> None:
        setattr(self, problem, getattr(self, problem) + amount)
        if len(self.examples[problem]) < 5:
            self.examples[problem].append(example)


async def account(
    dsn: str, submitted: Sequence[Submitted], killed: Sequence[KilledWorker]
) -> Accounting:
    """Account for every task in ``submitted``, given the workers SIGKILLed on the way."""
    rows = await retrying_db.fetch(
        dsn,
        _AUDIT,
        [s.n for s in submitted],
        [s.task_id for s in submitted],
        [s.poison for s in submitted],
        [k.worker_id for k in killed],
        [k.killed_at for k in killed],
    )
    acc = Accounting(submitted=len(submitted))
    for row in rows:
        _account_task(acc, row)
    total = int(await retrying_db.fetchval(dsn, _TOTAL_ROWS))
    known = sum(row["history_rows"] or (row["state"] is not None) for row in rows)
    if total != known:
        acc._flag("unexpected_tasks", total - known, f"{total} task rows for {known} known")
    return acc


def _account_task(acc: Accounting, row: Record) -> None:
    task = f"n={row['n']} id={row['task_id']}"
    state, attempts = row["state"], row["attempts"]
    if row["interrupted"]:
        acc.interrupted += 1
    if state is None:
        acc._flag("lost", 1, f"{task}: acknowledged, then gone")
        return
    if state in ("queued", "scheduled", "running"):
        acc._flag("stuck", 1, f"{task}: still {state} after {attempts} attempt(s)")
        return
    if row["history_rows"] > 1:
        acc._flag("finished_twice", 1, f"{task}: {row['history_rows']} history rows")
    _account_outcome(acc, row, task)
    _account_attempts(acc, row, task)
    if row["started_at"] is not None and (
        acc.first_started is None or row["started_at"] < acc.first_started
    ):
        acc.first_started = row["started_at"]
    if acc.last_finished is None or row["finished_at"] > acc.last_finished:
        acc.last_finished = row["finished_at"]


def _account_outcome(acc: Accounting, row: Record, task: str) -> None:
    state, poison, effects = row["state"], row["poison"], row["effect_rows"]
    by_tasks = list(row["by_tasks"] or [])
    if state == "cancelled":
        acc._flag("cancelled", 1, f"{task}: cancelled")
    elif poison and state == "dead":
        acc.poison_dead += 1
    elif poison:
        acc._flag("poison_not_dead", 1, f"{task}: poison ended {state}")
    elif state == "dead":
        acc._flag("dead", 1, f"{task}: dead after {row['attempts']} attempt(s)")
    else:
        acc.succeeded += 1
        if row["result_attempt"] != row["attempts"]:
            acc._flag(
                "result_mismatch",
                1,
                f"{task}: result of attempt {row['result_attempt']}, {row['attempts']} recorded",
            )
    if effects > 1:
        acc._flag("doubled_effects", effects - 1, f"{task}: {effects} effect rows")
    if not poison and state == "succeeded" and effects == 0:
        acc._flag("missing_effects", 1, f"{task}: succeeded without its effect")
    if effects and (poison or by_tasks != [row["task_id"]]):
        acc._flag("stray_effects", effects, f"{task}: effect rows by tasks {by_tasks}")


def _account_attempts(acc: Accounting, row: Record, task: str) -> None:
    expected = 1 + row["interrupted"]
    attempts = row["attempts"]
    detail = (
        f"{task}: {attempts} attempts, expected {expected} "
        f"({row['claims']} claims, {row['by_killed']} by SIGKILLed workers, "
        f"{row['interrupted']} interrupted)"
    )
    if attempts > expected:
        acc._flag("attempts_over", 1, detail)
        acc.extra_attempts += attempts - expected
        if row["by_killed"] == 0:
            acc._flag("attempts_over_never_on_killed", 1, detail)
    elif attempts < expected:
        acc._flag("attempts_under", 1, detail)
