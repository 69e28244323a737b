"""The per-key request rate limit at the door, shared by every API process.

Each API key has a drip bucket in the same store the gateway's provider budgets use
(PostgreSQL's ``llm_buckets``, or Redis when ``REDIS_URL`` is set), under the provider name
``api-key:<key id>``: every API instance draws from it, so the limit holds for the key
however many instances serve it. The rate is ``requests_per_second`` averaged over a minute,
with bursts of up to one second's worth (``DripRate(60 x rps, 60 s)``).

A request costs no round trip in the common case: the process books a block of slots at a
time and hands them out from memory (``core/door_rate.py`` says why the limit still holds).
Per key and process, one booking is in flight at a time (concurrent requests wait for it);
the block doubles while requests use it up and halves when it goes stale, between 1 and a
quarter of the burst. Over the limit: ``429 rate-limited`` with ``Retry-After``, and the
process refuses the key from memory until the next slot frees, so a client hammering
past its limit costs the bucket store one round trip per slot, not one per request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from conveyor.api.problems import Problem
from conveyor.core.door_rate import apportion
from conveyor.core.drip import DEFAULT_MARGIN, DripRate
from conveyor.gateway.budgets.bucket_store import BucketStore
from conveyor.store.params import BucketDraw

LATENESS = 0.25
"""Seconds a booked block may be used for; widens the rate's margin by as much (0.4 % of a
minute's budget)."""

WINDOW = 60.0
"""The rate's window: a key's requests per second are averaged over a minute."""


@dataclass
class _Key:
    """One key's slots in this process."""

    block: int = 1
    slots: int = 0
    fresh_until: float = 0.0
    refused_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class KeyRateLimit:
    """Admits a key's requests at ``requests_per_second``, shared through ``buckets``."""

    def __init__(
        self,
        buckets: BucketStore,
        requests_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if not requests_per_second > 0:
            raise ValueError(
                f"a rate limit needs requests_per_second > 0, got {requests_per_second}"
            )
        self._buckets = buckets
        self.rate = DripRate(requests_per_second * WINDOW, WINDOW, DEFAULT_MARGIN + LATENESS)
        self._max_block = max(1, math.floor(self.rate.burst / 4))
        self._clock = clock
        self._max_keys = max_keys
        self._keys: dict[str, _Key] = {}

    async def admit(self, key_id: str) -> None:
        """Take a slot for ``key_id``'s request; Problem(429) with Retry-After when over."""
        key = self._keys.get(key_id)
        if key is None:
            if len(self._keys) >= self._max_keys:
                self._keys.clear()  # bounded: each key's leftover slots are unused capacity
            key = self._keys[key_id] = _Key()
        if self._take(key):
            return
        async with key.lock:  # one booking in flight per key; the others wait for it
            if self._take(key):
                return
            await self._book(key_id, key)
            if not self._take(key):
                raise self._refusal(key)

    def _take(self, key: _Key) -> bool:
        now = self._clock()
        if key.slots > 0 and now <= key.fresh_until:
            key.slots -= 1
            return True
        if now < key.refused_until:
            raise self._refusal(key)
        return False

    async def _book(self, key_id: str, key: _Key) -> None:
        if key.slots > 0:  # the last block went stale with slots left: ask for less
            key.block = max(1, key.block // 2)
        elif key.fresh_until:  # it was used up: ask for more
            key.block = min(self._max_block, key.block * 2)
        size = key.block
        began = self._clock()
        emission = self.rate.emission
        draw = BucketDraw(_provider(key_id), "requests", size * emission)
        (ahead,) = await self._buckets.reserve_llm_budget([draw])
        booking = apportion(self.rate, ahead, size)
        if booking.give_back:
            back = BucketDraw(_provider(key_id), "requests", booking.give_back * emission)
            await self._buckets.refund_llm_budget([back])
        key.slots = booking.usable
        key.fresh_until = began + LATENESS  # from before the round trip: never later
        if not booking.usable:
            key.block = 1
            key.refused_until = began + booking.wait

    def _refusal(self, key: _Key) -> Problem:
        wait = max(1, math.ceil(key.refused_until - self._clock()))
        per_second = self.rate.limit / self.rate.window
        return Problem(
            429,
            "rate-limited",
            f"this API key is over its rate limit of {per_second:g} requests per second; "
            f"retry after {wait} s",
            headers={"Retry-After": str(wait)},
        )


def _provider(key_id: str) -> str:
    return f"api-key:{key_id}"
