"""Load shedding by priority: which submissions a queue past its depth threshold refuses.

A queue with a depth threshold ``T`` (``conveyor queues set Q --depth-threshold T``) refuses
new work by priority band once its depth (tasks ready and waiting: state ``queued``, all
tenants together) reaches that band's mark:

====================  ============  =========================================
priority              band          refused at depth
====================  ============  =========================================
6 … 10                batch         ``T``
2 … 5                 normal        ``2 T`` (``NORMAL_FACTOR``)
1                     urgent        ``4 T`` (``URGENT_FACTOR``): a hard cap
====================  ============  =========================================

so batch work goes first, normal work only when the backlog doubles, and urgent work only at
a hard cap that keeps the table from growing without bound. A refusal says how long to wait
(``Retry-After``): the time the queue needs to drain below the band's mark at its measured
drain rate (tasks finished per second), within ``MIN_RETRY_AFTER`` … ``MAX_RETRY_AFTER``;
a queue that drains nothing gets the maximum.

Pure: the API reads depth and drain rate in the background and calls these rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NORMAL_FACTOR = 2
"""Normal work (priority 2-5) is refused at this many times the threshold."""
URGENT_FACTOR = 4
"""Urgent work (priority 1) is refused at this many times the threshold."""
MIN_RETRY_AFTER = 1
"""The shortest wait a refusal asks for, in seconds."""
MAX_RETRY_AFTER = 300
"""The longest wait a refusal asks for, in seconds (and the answer when nothing drains)."""


def mark(threshold: int, priority: int) -> int:
    """The depth at which a queue with ``threshold`` refuses work of ``priority``."""
    if threshold < 1:
        raise ValueError(f"a depth threshold is at least 1, got {threshold}")
    if not 1 <= priority <= 10:
        raise ValueError(f"a priority lies in 1..10, got {priority}")
    if priority == 1:
        return threshold * URGENT_FACTOR
    if priority <= 5:
        return threshold * NORMAL_FACTOR
    return threshold


def count_limit(threshold: int) -> int:
    """How far the depth needs counting: one past the highest mark decides every band."""
    return threshold * URGENT_FACTOR + 1


@dataclass(frozen=True, slots=True)
class Refusal:
    """Work refused: the band's mark, the depth seen, and the seconds to wait."""

    mark: int
    depth: int
    retry_after: int


def admit(
    threshold: int | None, depth: int, priority: int, drain_per_second: float
) -> Refusal | None:
    """None when a task of ``priority`` is admitted at ``depth``; else the refusal.

    ``threshold`` None is a queue that never sheds.
    """
    if threshold is None:
        return None
    at = mark(threshold, priority)
    if depth < at:
        return None
    return Refusal(at, depth, retry_after(depth - at + 1, drain_per_second))


def retry_after(excess: int, drain_per_second: float) -> int:
    """Whole seconds for ``excess`` tasks to drain at ``drain_per_second``, bounded."""
    if not drain_per_second > 0 or not math.isfinite(drain_per_second):
        return MAX_RETRY_AFTER
    seconds = max(excess, 1) / drain_per_second
    if not seconds < MAX_RETRY_AFTER:  # also a drain so slow the quotient overflows
        return MAX_RETRY_AFTER
    return max(math.ceil(seconds), MIN_RETRY_AFTER)
