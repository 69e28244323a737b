"""Drip rates: at most ``limit`` units (requests or tokens) in any window of ``window`` s.

A generic cell rate algorithm scheduled ahead: every reservation takes the next free slot
of its bucket, even one in the future, and the caller waits until that slot begins. So
callers wait their turn in order instead of failing, and the provider sees a steady drip.
Burst and emission are chosen so that no sliding window ever holds more than the limit:
in any span of ``s`` seconds GCRA admits at most ``burst + s / emission`` units, and
``emission = (window + margin) / (limit - burst)`` makes that ``limit`` for spans of
``window + margin``. The margin absorbs the jitter between taking a slot and the request
reaching the provider (an event loop busy elsewhere, a connection being opened): requests
that left their slots up to ``margin`` late still never crowd one of the provider's
windows. Measured: without it, one call in 30 drew a 429 under a loaded test run.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MARGIN = 0.25
"""Seconds of lateness between a slot and its request that never crowd a window."""


@dataclass(frozen=True, slots=True)
class DripRate:
    """``limit`` units per ``window`` seconds."""

    limit: float
    window: float = 60.0
    margin: float = DEFAULT_MARGIN

    def __post_init__(self) -> None:
        if not self.limit > 0 or not self.window > 0 or self.margin < 0:
            raise ValueError(f"a drip rate needs limit > 0, window > 0 and margin >= 0, got {self}")

    @property
    def burst(self) -> float:
        """Units that may go at once: one second's worth, at most half the limit."""
        return max(min(self.limit / self.window, self.limit / 2), min(1.0, self.limit / 2))

    @property
    def emission(self) -> float:
        """Seconds a unit occupies the bucket once the burst is spent."""
        return (self.window + self.margin) / (self.limit - self.burst)

    def wait(self, ahead_seconds: float) -> float:
        """How long a reservation waits, given how far its bucket's clock now runs ahead
        of the present (``tat - now`` after the reservation was added)."""
        return max(0.0, ahead_seconds - self.burst * self.emission)


def schedule(rate: DripRate, tat: float, now: float, cost: float) -> tuple[float, float]:
    """Reserve ``cost`` units at ``now`` on a bucket whose clock is ``tat``: the new clock and
    the moment the reservation may start. The pure twin of the ``reserve_llm_budget`` SQL."""
    new_tat = max(tat, now) + cost * rate.emission
    return new_tat, now + rate.wait(new_tat - now)
