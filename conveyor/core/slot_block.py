"""A block of a drip bucket's clock booked by one process, handed out slot by slot.

The pure part of ``conveyor/gateway/budgets/slot_leases.py``. A block is booked at ``booked_at``
and covers the bucket's clock from ``cursor`` to ``end`` (local monotonic seconds). A draw
of ``seconds`` takes the next stretch; its slot may start at ``max(booked_at, clock -
tolerance)`` (``tolerance`` is the bucket's burst in seconds of its clock), and is only
handed out if it can start no later than ``lateness`` after that: older stretches are
skipped, never used, so a late slot never crowds the provider's window by more than the
rate's margin allows. The server's clock is only known to lie between the request and the
reply: ``end`` is placed at the reply (a caller never starts early), and ``skew`` (the round
trip) is taken off it when judging lateness (a slot never starts later than allowed).
"""

from __future__ import annotations

from dataclasses import dataclass

SLACK = 1e-9
"""Float rounding allowed at the block's end (draws sum to the booked seconds)."""


@dataclass
class SlotBlock:
    """Bucket time from ``cursor`` to ``end`` that this process owns."""

    booked_at: float
    cursor: float
    end: float
    skew: float = 0.0
    """How much later than the server's ``end`` may lie (the booking's round trip)."""

    def left(self) -> float:
        """Seconds of the bucket's clock not yet handed out."""
        return max(0.0, self.end - self.cursor)

    def clock_after(
        self, seconds: float, now: float, tolerance: float, lateness: float
    ) -> float | None:
        """The clock a draw of ``seconds`` taken at ``now`` would end at, or None when the
        block's fresh part is too short. Nothing changes; ``take`` commits."""
        start = self.cursor
        if now > self.booked_at + lateness:
            # The slot must start in time: clock - skew - tolerance >= now - lateness.
            start = max(start, now - lateness + tolerance + self.skew - seconds)
        clock = start + seconds
        return clock if clock <= self.end + SLACK else None

    def take(self, clock: float) -> None:
        """Hand out the block up to ``clock`` (from ``clock_after``)."""
        self.cursor = clock

    def expired(self, now: float, tolerance: float, lateness: float) -> bool:
        """True when nothing is left to hand out at ``now``: spent, or even its last slot
        would start more than ``lateness`` late."""
        last_start = max(self.booked_at, self.end - self.skew - tolerance)
        return self.left() <= SLACK or now > last_start + lateness

    def future(self, now: float) -> float:
        """Seconds of the block that lie ahead of ``now`` and were not handed out: what is
        worth giving back to the bucket (the past of an idle bucket is worth nothing)."""
        return max(0.0, self.end - max(self.cursor, now))
