"""The garbage collector of a long-running process (a worker, an API server process), set
once the process has started. Both composition roots call it; the worker and the API never
do it themselves.

A full (generation 2) collection walks every live object. With 10,000 agents in flight in a
worker it was measured at 20-45 ms, the largest source of loop lag. An API process holding
10,000 SSE streams holds about 2.3 million tracked objects (each stream's ASGI stack), and
with the default thresholds what a stream holds while it waits for its next event (about a
second) was promoted fast enough to start a full collection every few seconds, each pausing
the process for up to 1.8 s (``benchmarks/sse.py``: p99 delay 0.4-3.3 s before, about 20 ms
after).

Freezing what exists at start (modules, the app) takes it out of every later collection,
and a generation-0 threshold of 50,000 instead of 700 makes collections rarer, so an object
that lives a second is usually freed before it is ever promoted (Instagram's server recipe).
"""

from __future__ import annotations

import gc

YOUNGEST_THRESHOLD = 50_000
"""Net allocations between collections of the youngest generation (CPython's default: 700)."""


def tune_garbage_collector() -> None:
    """Freeze what the process built to start, and collect the youngest generation seldom."""
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNGEST_THRESHOLD, middle, oldest)
