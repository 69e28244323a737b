"""Layered timeouts of one LLM attempt, and which deadline applies to the next read.

A single read timeout cannot tell a model that is slow to start from a stream that died
halfway, and a single total timeout notices a dead stream only at its very end. So each
attempt has four layers, nested connect <= ttft <= gap <= total:

- ``connect``: to open the connection;
- ``ttft``: from the start of the attempt to the first token (to the response headers and
  first body byte of a non-streamed reply);
- ``gap``: the longest wait for the next chunk once tokens flow;
- ``total``: the attempt's whole wall time, the caller's time between chunks included.

Pure: times are floats (seconds on one monotonic clock) passed in by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise

from conveyor.errors import ConfigurationError

LAYER_ORDER = ("connect", "ttft", "gap", "total")


class TimeoutLayer(StrEnum):
    """One layer of the timeouts; the value names the field and the error's ``layer``."""

    CONNECT = "connect"
    TTFT = "ttft"
    GAP = "gap"
    TOTAL = "total"


@dataclass(frozen=True, slots=True)
class LayeredTimeouts:
    """The four limits of one attempt, in seconds; each is finite, > 0, and they nest.

    Attributes:
        connect: opening the connection (default 5).
        ttft: start of the attempt to the first token (default 60).
        gap: the longest silence between chunks once tokens flow (default 60).
        total: the whole attempt (default 600).
    """

    connect: float = 5.0
    ttft: float = 60.0
    gap: float = 60.0
    total: float = 600.0

    def __post_init__(self) -> None:
        for name in LAYER_ORDER:
            value = getattr(self, name)
            # `not value > 0` also catches NaN, which every comparison would let through.
            if isinstance(value, bool) or not (value > 0 and math.isfinite(value)):
                raise ConfigurationError(
                    f"{name} must be a finite number of seconds > 0, got {value!r}"
                )
        for lower, higher in pairwise(LAYER_ORDER):
            low, high = getattr(self, lower), getattr(self, higher)
            if high < low:
                raise ConfigurationError(
                    f"{higher} ({high:g}s) must be at least {lower} ({low:g}s): the timeout "
                    "layers nest as connect <= ttft <= gap <= total"
                )

    def limit(self, layer: TimeoutLayer) -> float:
        """The seconds of ``layer``."""
        value: float = getattr(self, layer.value)
        return value


def next_deadline(
    timeouts: LayeredTimeouts, started: float, now: float, token_seen: bool
) -> tuple[float, TimeoutLayer]:
    """The deadline of the wait that starts at ``now``, and the layer that fires at it.

    Before the first token the wait ends at ``started + ttft``; after it, ``gap`` from
    ``now`` (the gap is measured from when the wait begins, so time the caller spends
    between chunks is not held against the provider). Either is capped by the total
    deadline, which then is the layer that fires.
    """
    total = started + timeouts.total
    if token_seen:
        own, layer = now + timeouts.gap, TimeoutLayer.GAP
    else:
        own, layer = started + timeouts.ttft, TimeoutLayer.TTFT
    if total < own:
        return total, TimeoutLayer.TOTAL
    return own, layer
