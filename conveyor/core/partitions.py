"""Monthly partitions of history tables: names, bounds, and which ones retention drops.

A partition ``task_history_p2026_11`` holds rows whose ``finished_at`` falls in
``[2026-11-01, 2026-12-01)`` UTC. Retention drops a partition only when its whole range is
older than the cutoff, so no row younger than the cutoff is ever lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

_NAME = re.compile(r"(?P<parent>[a-z_]+)_p(?P<year>\d{4})_(?P<month>\d{2})")


@dataclass(frozen=True, order=True, slots=True)
class Month:
    """A calendar month in UTC."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise ValueError(f"month must be 1..12, got {self.month}")

    @classmethod
    def of(cls, moment: datetime) -> Month:
        """The month that contains ``moment`` (converted to UTC)."""
        utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        return cls(utc.year, utc.month)

    def plus(self, months: int) -> Month:
        """The month ``months`` after this one (negative goes back)."""
        index = self.year * 12 + (self.month - 1) + months
        return Month(index // 12, index % 12 + 1)

    @property
    def start(self) -> datetime:
        """The first instant of the month, UTC."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant of the next month, UTC (exclusive upper bound)."""
        return self.plus(1).start


def partition_name(parent: str, month: Month) -> str:
    """The partition table's name for ``parent`` in ``month``."""
    return f"{parent}_p{month.year:04d}_{month.month:02d}"


def parse_partition_name(name: str) -> tuple[str, Month] | None:
    """``(parent, month)`` for a name made by :func:`partition_name`, else None."""
    match = _NAME.fullmatch(name)  # `$` alone would also accept a trailing newline
    if match is None:
        return None
    month = int(match["month"])
    if not 1 <= month <= 12:
        return None
    return match["parent"], Month(int(match["year"]), month)


def months_to_create(now: datetime, months_ahead: int) -> list[Month]:
    """The current month and the ``months_ahead`` after it, oldest first."""
    if months_ahead < 0:
        raise ValueError("months_ahead must be >= 0")
    current = Month.of(now)
    return [current.plus(i) for i in range(months_ahead + 1)]


def partitions_to_drop(names: list[str], parent: str, cutoff: datetime) -> list[str]:
    """Names among ``names`` of ``parent``'s partitions that end at or before ``cutoff``."""
    doomed = []
    for name in names:
        parsed = parse_partition_name(name)
        if parsed is not None and parsed[0] == parent and parsed[1].end <= cutoff:
            doomed.append(name)
    return sorted(doomed)
