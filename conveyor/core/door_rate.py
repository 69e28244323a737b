"""A request rate limit at the door, on a shared drip bucket booked a block at a time.

Each API key has a drip bucket (``core/drip.py``) that every API process shares. A process
books a block of ``n`` request slots in one round trip (the bucket's clock moves ``n``
emissions ahead and the store answers how far ahead it now runs), keeps the slots that may
go *now* and gives the rest back at once. Requests take kept slots from memory until the
block runs out or grows stale (``lateness`` seconds after it was booked). A process that
finds no slot free refuses with the wait until the next one.

Why the limit holds: a kept slot is one the bucket admits at the moment of booking, and it
is used at most ``lateness`` seconds later; the rate is built with ``lateness`` in its
margin (``DripRate.margin``), so slots used that late never crowd a window. Giving back the
slots that may not go now equals booking only the others (the bucket's clock only adds and
subtracts), so no process holds future capacity. What a stale block still holds is unused
capacity, never excess.

Pure: ``apportion`` reads one booking's answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from conveyor.core.drip import DripRate

EPSILON = 1e-9
"""Slack for float noise in a slot's position (a billionth of an emission)."""


@dataclass(frozen=True, slots=True)
class Booking:
    """What one booked block gives: ``usable`` slots now, the rest to give back, and, when
    none is usable, the seconds until the first would be (``wait``)."""

    usable: int
    give_back: int
    wait: float


def apportion(rate: DripRate, ahead: float, booked: int) -> Booking:
    """Split ``booked`` slots just reserved, the bucket's clock now ``ahead`` seconds ahead.

    Slot ``i`` of the block (0 first) runs ``ahead - (booked - 1 - i) * emission`` ahead and
    may go now when that is within the burst (``rate.wait`` is zero).
    """
    if booked < 1:
        raise ValueError(f"a booking holds at least one slot, got {booked}")
    over = ahead - rate.burst * rate.emission  # how far past the burst the clock runs
    late = max(0, math.ceil(over / rate.emission - EPSILON)) if over > 0 else 0
    usable = max(booked - late, 0)
    wait = 0.0 if usable else max(over - (booked - 1) * rate.emission, 0.0)
    return Booking(usable, booked - usable, wait)
