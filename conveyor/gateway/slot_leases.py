"""Slots of a provider's shared bucket booked ahead of demand, so a call need not wait on
a round trip to take one.

Every call toward a rate-limited provider takes its slot in the shared bucket (PostgreSQL or
Redis). On a loaded VM that round trip costs 0.6-1.6 ms after an idle moment, more than the
whole budget of the gateway's overhead. ``SlotLeases`` books a block of the bucket's time in
one round trip, off the calls' path, and hands its slots out to the process's calls as they
come: a call whose every draw fits a fresh lease takes its slots in memory.

Why the limit still holds: a slot booked at ``b`` with clock ``tat`` may be sent from
``max(b, tat - burst)`` on; GCRA admits at most ``burst + s / emission`` such starts in any
span ``s``. A leased slot is only handed out while the call can start within ``lateness``
seconds of that moment, and the provider's rate is built with ``lateness`` added to its
margin (``DripRate.margin``), so slots used up to that late still never crowd one of the
provider's windows. A slot that grew too old is skipped, never sent: unused capacity, not
excess.

Only the providers' own buckets are leased: a tenant's bucket is too small to hold slots
back from it (60 requests a minute is one a second), so a call with a tenant draw takes the
round trip as before. The block follows demand: the most a refresh period asked for in the
last ``HISTORY`` periods, capped at a quarter of the bucket's burst so that the leases of
several processes cannot make a caller elsewhere wait. A block about to go stale unused
is netted against the next one (its unused future given back), a lease unused for
``IDLE_AFTER`` seconds is given back, and so is what is left when the gateway closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from conveyor.core.drip import DripRate
from conveyor.core.slot_block import SlotBlock
from conveyor.gateway.bucket_backend import BucketStore
from conveyor.store.params import BucketDraw

IDLE_AFTER = 2.0
"""Seconds without a call before a lease is given back and its refreshing stops."""

HISTORY = 16
"""Refresh periods whose demand sizes the next block (at 0.25 s lateness: the last 2 s)."""

BURST_SHARE = 0.25
"""The largest block, as a share of the bucket's burst."""

LeaseKey = tuple[str, str]  # (provider, kind)

log = structlog.get_logger("conveyor.gateway")


@dataclass
class _Bucket:
    """One leased bucket: its rate, its blocks (oldest first), what recent periods asked."""

    rate: DripRate
    lateness: float
    blocks: deque[SlotBlock] = field(default_factory=deque)
    asked: float = 0.0
    """Seconds of bucket time asked in the current period."""
    peaks: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    last_ask: float = 0.0
    largest: float = 0.0
    """The largest single draw seen: a block smaller than that could never serve it."""
    dropped: float = 0.0
    """Seconds ahead of now that blocks dropped as stale still held, to give back."""

    @property
    def tolerance(self) -> float:
        """The bucket's burst in seconds of its clock."""
        return self.rate.burst * self.rate.emission

    def target(self) -> float:
        """Seconds of bucket time the next block should hold."""
        peak = max([self.asked, *self.peaks])
        return min(peak * 1.25, self.tolerance * BURST_SHARE)

    def clock_after(self, seconds: float, now: float) -> tuple[SlotBlock, float] | None:
        """The block that serves a draw of ``seconds`` now, oldest first, and its clock
        after it; None if none can. Spent and wholly stale blocks are dropped on the way."""
        while self.blocks and self.blocks[0].expired(now, self.tolerance, self.lateness):
            self.dropped += self.blocks.popleft().future(now)  # too old to send: never used
        for block in self.blocks:
            clock = block.clock_after(seconds, now, self.tolerance, self.lateness)
            if clock is not None:
                return block, clock
        return None

    def fresh(self, at: float) -> float:
        """Seconds of bucket time the blocks can still hand out at ``at``."""
        return sum(
            b.left() for b in self.blocks if not b.expired(at, self.tolerance, self.lateness)
        )

    def needs_renewal(self, now: float, period: float) -> bool:
        """True when the blocks will not serve the next period's calls."""
        return self.fresh(now + period) < self.target() / 2

    def future(self, now: float) -> float:
        """Seconds of the blocks booked ahead of ``now`` and not handed out."""
        return sum(b.future(now) for b in self.blocks) + self.dropped

    def retire(self, at: float, now: float) -> float:
        """Drop the blocks that will have expired by ``at``; the seconds they (and the
        blocks dropped before) still hold ahead of ``now``, to be given back."""
        keep: deque[SlotBlock] = deque()
        unused = self.dropped
        for block in self.blocks:
            if block.expired(at, self.tolerance, self.lateness):
                unused += block.future(now)
            else:
                keep.append(block)
        self.blocks = keep
        self.dropped = 0.0
        return unused


class SlotLeases:
    """Leases of the providers' buckets for one process; see the module docstring.

    ``lateness`` maps each leased provider to how late (seconds) a leased slot may start;
    the provider's ``DripRate`` must carry that in its margin. ``store`` is where blocks are
    booked and given back (the same store the calls' own reservations use).
    """

    def __init__(
        self,
        store: BucketStore,
        lateness: Mapping[str, float],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._lateness = {p: late for p, late in lateness.items() if late > 0}
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[LeaseKey, _Bucket] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.served = 0
        """Calls whose every slot came from a lease (no round trip on their path)."""
        self.renewals = 0

    def leases(self, provider: str) -> bool:
        """Whether ``provider``'s buckets are leased."""
        return provider in self._lateness

    def held(self) -> dict[LeaseKey, float]:
        """Seconds of each leased bucket's clock booked ahead and not yet handed out."""
        now = self._clock()
        return {key: bucket.future(now) for key, bucket in self._buckets.items()}

    def take(self, planned: Sequence[tuple[BucketDraw, DripRate]]) -> list[float] | None:
        """Each draw's clock ahead of now from the leases, or None: take the round trip.

        Only a call whose draws are all of leased provider buckets is served or counted as
        demand; one lease that cannot serve its draw sends the whole call to the store.
        """
        if self._closed or not planned:
            return None
        if any(d.tenant_id or d.provider not in self._lateness for d, _ in planned):
            return None
        now = self._clock()
        ends: list[tuple[_Bucket, float]] = []
        for draw, rate in planned:
            bucket = self._bucket(draw, rate)
            bucket.asked += draw.seconds
            bucket.largest = max(bucket.largest, draw.seconds)
            bucket.last_ask = now
            ends.append((bucket, draw.seconds))
        self._start()
        taken: list[tuple[_Bucket, SlotBlock, float]] = []
        for bucket, seconds in ends:
            found = bucket.clock_after(seconds, now)
            if found is None:
                self._wake.set()  # the lease ran dry or stale: book the next block now
                return None
            taken.append((bucket, *found))
        for bucket, block, clock in taken:
            block.take(clock)
            if bucket.fresh(now) < bucket.target() / 2:
                self._wake.set()  # book the next block before the next calls need it
        self.served += 1
        return [clock - now for _, _, clock in taken]

    async def aclose(self) -> None:
        """Stop refreshing and give back every lease's unused future."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._release(list(self._buckets))

    def _bucket(self, draw: BucketDraw, rate: DripRate) -> _Bucket:
        key = (draw.provider, draw.kind)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[key] = _Bucket(rate, self._lateness[draw.provider])
        return bucket

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    def _period(self) -> float:
        return max(min(self._lateness.values()) / 2, 0.01)

    async def _refresh(self) -> None:
        """Keep each bucket's lease fresh while calls come; stop when none have for a while."""
        period = self._period()
        began = self._clock()
        while not self._closed:
            now = self._clock()
            if now - began >= period:
                began = now
                for bucket in self._buckets.values():
                    bucket.peaks.append(bucket.asked)
                    bucket.asked = 0.0
            idle = [k for k, b in self._buckets.items() if now - b.last_ask > IDLE_AFTER]
            if idle:
                await self._release(idle)
            if not self._buckets:
                return
            due = [
                key
                for key, bucket in self._buckets.items()
                if bucket.target() >= bucket.largest > 0 and bucket.needs_renewal(now, period)
            ]
            if due:
                await self._renew(due)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=period)

    async def _renew(self, keys: Sequence[LeaseKey]) -> None:
        """Book the next block of each bucket in one round trip.

        Blocks about to go stale unused are dropped first and their unused future is netted
        against the new block (one draw of ``target - unused``): without that, a process
        renewing a fresh block every period while its calls come once a second booked
        the bucket faster than it drips, and everyone's calls waited for slots nobody used.
        """
        now = self._clock()
        period = self._period()
        targets, draws = [], []
        for provider, kind in keys:
            leased = self._buckets[(provider, kind)]
            target = leased.target()
            unused = leased.retire(now + period, now)
            # With more unused than the target, the new block lies inside the dropped time,
            # which this process owned: a draw of 0 keeps it, the rest is not given back.
            targets.append(target)
            draws.append(BucketDraw(provider, kind, max(target - unused, 0.0), ""))
        sent = self._clock()
        try:
            ahead = await self._store.reserve_llm_budget(draws)
        except Exception:
            log.exception("llm_budget_lease_failed", providers=sorted({p for p, _ in keys}))
            await self._sleep(period)  # the calls take round trips meanwhile
            return
        got = self._clock()
        self.renewals += 1
        unwanted: list[BucketDraw] = []
        for key, target, a in zip(keys, targets, ahead, strict=True):
            bucket = self._buckets.get(key)
            end = got + a
            if bucket is None or self._closed:  # released or closed meanwhile: give it back
                future = end - max(end - target, got)
                unwanted.append(BucketDraw(key[0], key[1], max(0.0, future), ""))
                continue
            # Appended: the older blocks' fresh slots are used first.
            bucket.blocks.append(SlotBlock(booked_at=sent, cursor=end - target, end=end))
        await self._give_back([d for d in unwanted if d.seconds > 0])

    async def _release(self, keys: Sequence[LeaseKey]) -> None:
        now = self._clock()
        leftovers = []
        for key in keys:
            future = self._buckets.pop(key).future(now)  # the dropped blocks' included
            if future > 0:
                leftovers.append(BucketDraw(key[0], key[1], future, ""))
        await self._give_back(leftovers)

    async def _give_back(self, draws: Sequence[BucketDraw]) -> None:
        if not draws:
            return
        try:
            await self._store.refund_llm_budget(draws)
        except Exception:
            log.exception("llm_budget_lease_refund_failed")
