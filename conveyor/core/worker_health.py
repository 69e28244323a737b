"""Judge a worker from what its heartbeat reports: healthy, or a problem an operator must see.

A worker can be alive (beating) and still useless: it may hold more tasks than its
concurrency (their outcomes cannot be written, so their leases are kept while new work is
claimed), or hold work while recording nothing for a long time. Either is a black hole that
no reaper can see, because the leases stay fresh; ``conveyor status`` and the metrics show
it with this judgement.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class WorkerHealth(StrEnum):
    """What ``judge_worker`` found."""

    OK = "ok"
    STOPPED = "stopped"
    """The worker said goodbye."""
    SILENT = "silent"
    """No heartbeat for longer than a lease: dead or cut off; its leases will be reaped."""
    OVER_CAPACITY = "over-capacity"
    """Holds more than twice its concurrency: outcomes are piling up unwritten. (Up to twice
    is normal for a busy worker: it claims while the last batch of outcomes is written.)"""
    STUCK = "stuck"
    """Holds tasks but recorded no outcome for longer than the stuck threshold."""


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """One worker as its row says: state, silence, what it holds and its last outcome."""

    state: str
    silent_seconds: float
    held: int
    concurrency: int
    seconds_since_outcome: float


def judge_worker(
    report: WorkerReport, *, lease_seconds: float, stuck_seconds: float
) -> WorkerHealth:
    """The worker's health; the first problem found, in order of severity."""
    if report.state == "stopped":
        return WorkerHealth.STOPPED
    if report.silent_seconds > lease_seconds:
        return WorkerHealth.SILENT
    if report.held > 2 * report.concurrency:
        return WorkerHealth.OVER_CAPACITY
    if report.held > 0 and report.seconds_since_outcome > stuck_seconds:
        return WorkerHealth.STUCK
    return WorkerHealth.OK
