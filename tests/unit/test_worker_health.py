"""judge_worker: the problems a heartbeat reveals, in order of severity."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.worker_health import WorkerHealth, WorkerReport, judge_worker


def report(**fields: object) -> WorkerReport:
    values: dict[str, object] = {
        "state": "running",
        "silent_seconds": 1.0,
        "held": 3,
        "concurrency": 10,
        "seconds_since_outcome": 2.0,
        **fields,
    }
    return WorkerReport(**values)  # type: ignore[arg-type]


def judge(r: WorkerReport) -> WorkerHealth:
    return judge_worker(r, lease_seconds=30, stuck_seconds=300)


def test_each_problem_is_named() -> None:
    assert judge(report()) is WorkerHealth.OK
    assert judge(report(state="stopped", held=50)) is WorkerHealth.STOPPED
    assert judge(report(silent_seconds=31)) is WorkerHealth.SILENT
    assert judge(report(held=2600)) is WorkerHealth.OVER_CAPACITY
    assert judge(report(held=20)) is WorkerHealth.OK  # claiming while a batch is written
    assert judge(report(seconds_since_outcome=301)) is WorkerHealth.STUCK
    assert judge(report(held=0, seconds_since_outcome=10_000)) is WorkerHealth.OK  # idle


@given(
    held=st.integers(0, 10_000),
    concurrency=st.integers(1, 1000),
    silent=st.floats(0, 1000),
    since=st.floats(0, 10_000),
)
def test_a_worker_is_ok_only_when_nothing_is_wrong(
    held: int, concurrency: int, silent: float, since: float
) -> None:
    found = judge(
        report(
            held=held, concurrency=concurrency, silent_seconds=silent, seconds_since_outcome=since
        )
    )
    wrong = silent > 30 or held > 2 * concurrency or (held > 0 and since > 300)
    assert (found is WorkerHealth.OK) is not wrong
