"""Slots of a provider's shared bucket booked ahead of demand, so a call need not wait on
a round trip to take one.

Every call toward a rate-limited provider takes its slot in the shared bucket (PostgreSQL or
Redis). On a loaded VM that round trip costs 0.6-1.6 ms after an idle moment, more than the
whole budget of the gateway's overhead. ``SlotLeases`` books a block of the bucket's time in
one round trip, off the calls' path, and hands its slots out to the process's calls as they
come: a call whose every draw fits a fresh block takes its slots in memory.

Why the limit still holds: a slot booked at ``b`` with clock ``tat`` may be sent from
``max(b, tat - burst)`` on; GCRA admits at most ``burst + s / emission`` such starts in any
span ``s``. A leased slot is only handed out while the call can start within ``lateness``
seconds of that moment (``conveyor/core/slot_block.py``), and the provider's rate is built
with ``lateness`` added to its margin (``DripRate.margin``), so slots used up to that late
still never crowd one of the provider's windows. A slot that grew too old is skipped, never
sent, and leased time is never given back (a refund from the middle of a busy bucket's queue
would hand the same stretch of its clock to the next booker): unused capacity, never excess.

What is booked, and when, keeps that unused capacity small:

- A block holds whole draws of the last call's size, 1.25 x the most a refresh period (half
  of ``lateness``) asked of the bucket in the last ``HISTORY`` periods, at most a quarter of
  the burst and at most half of ``lateness`` of its clock. The last bound means that on an
  idle bucket a block's clock has passed by the time it goes stale, so keeping a block fresh
  there books nothing ahead.
- A block is kept fresh for calls to come (booked before they ask) only while the bucket is
  idle (its clock, as the last booking or call saw it, held nothing but this process's own
  bookings) and this process's own rate predicts a call within the block's life. On a busy
  bucket a block is only booked to replenish one that calls are draining, or for a steady
  stream of calls (three periods in a row), so a process whose calls stop, or come in waves,
  wastes at most one block.
- Only the providers' own buckets are leased, and only calls whose every draw fits a block:
  a tenant's bucket is too small to hold slots back from it (60 requests a minute is one a
  second), and a call with a tenant draw, or a token draw larger than a block, takes the
  round trip as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from conveyor.core.drip import DripRate
from conveyor.core.slot_block import SLACK, SlotBlock
from conveyor.gateway.budgets.bucket_store import BucketStore
from conveyor.store.params import BucketDraw

IDLE_AFTER = 2.0
"""Seconds without a call before a bucket's leasing stops (its blocks are left to pass)."""

HISTORY = 16
"""Refresh periods whose demand sizes the next block (at 0.25 s lateness: the last 2 s)."""

BURST_SHARE = 0.25
"""The largest block, as a share of the bucket's burst."""

IDLE_SLACK = 0.005
"""Seconds of clock a booking may land past where this process's own would put it and the
bucket still count as idle (the two clocks' jitter); at most half an emission."""

MIN_IDLE_SLACK = 0.002
"""The least of that slack, whatever the rate: ends measured at two replies differ by the
round trips' jitter (and the server's microsecond rounding)."""

LeaseKey = tuple[str, str]  # (provider, kind)


def block_cap(rate: DripRate, lateness: float) -> float:
    """The largest block of a bucket, in seconds of its clock: a quarter of its burst, and
    half of ``lateness`` (so that on an idle bucket a block's clock has passed by the time
    it goes stale)."""
    return min(rate.burst * rate.emission * BURST_SHARE, lateness / 2)


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
    idle: bool = False
    """The bucket's clock, last seen, held nothing ahead but this process's bookings."""
    drained: bool = False
    """Calls took slots from the blocks since the last booking and left them low."""
    last_draw: float = 0.0
    """The last call's draw: blocks holding less than that serve nobody."""
    own_end: float = 0.0
    """Where this process's latest booking (a block or a call's own) ended, local time."""

    def booked(self, end: float, seconds: float, now: float) -> None:
        """This process booked ``seconds`` and the bucket's clock ended at ``end``.

        The bucket is idle if its clock, before this booking, had fallen behind now, or
        held only this process's own bookings made while it was idle: nobody else has
        booked ahead since it was last seen empty."""
        slack = max(min(IDLE_SLACK, self.rate.emission / 2), MIN_IDLE_SLACK)
        ahead_was_own = end <= max(self.own_end, now) + seconds + slack
        was_empty = end <= now + seconds + slack
        self.idle = was_empty or (ahead_was_own and self.idle)
        self.own_end = end

    @property
    def tolerance(self) -> float:
        """The bucket's burst in seconds of its clock."""
        return self.rate.burst * self.rate.emission

    @property
    def cap(self) -> float:
        """The largest block, in seconds of the bucket's clock."""
        return block_cap(self.rate, self.lateness)

    def target(self) -> float:
        """Seconds of bucket time the next block should hold: whole draws of the last
        call's size (a remnant smaller than a draw serves nobody), at least one."""
        draw = self.last_draw
        if draw <= 0:
            return 0.0
        peak = max([self.asked, *self.peaks])
        wanted = max(1, math.floor(peak * 1.25 / draw + 1e-9))
        return min(wanted, math.floor(self.cap / draw + 1e-9)) * draw

    def clock_after(self, seconds: float, now: float) -> tuple[SlotBlock, float] | None:
        """The block that serves a draw of ``seconds`` now, oldest first, and its clock
        after it; None if none can. Spent and wholly stale blocks are dropped on the way."""
        while self.blocks and self.blocks[0].expired(now, self.tolerance, self.lateness):
            self.blocks.popleft()  # too old to send: unused capacity, never excess
        for block in self.blocks:
            clock = block.clock_after(seconds, now, self.tolerance, self.lateness)
            if clock is not None:
                return block, clock
        return None

    def fresh(self, at: float) -> float:
        """Seconds of bucket time the blocks can still hand out at ``at``."""
        return sum(
            b.left()
            for b in self.blocks
            if b.left() >= self.last_draw - SLACK
            and not b.expired(at, self.tolerance, self.lateness)
        )

    def needs_renewal(self, now: float, period: float) -> bool:
        """True when the blocks will not serve the next period's calls and booking more is
        worth it: the bucket is idle (nothing lost if unused) or calls are draining it."""
        target = self.target()  # whole draws: 0 when not even one fits a block
        if target <= 0:
            return False
        low = self.fresh(now + period) < target
        return low and (
            (self.idle and self.expects_call(period)) or self.drained or self.sustained()
        )

    def expects_call(self, period: float) -> bool:
        """This process's own recent rate predicts a call within a block's life
        (``lateness``): a block kept fresh for calls that come less often goes stale unused,
        burning the spare capacity that absorbs other processes' bursts."""
        history = [self.asked, *self.peaks]
        per_period = sum(history) / len(history)
        return per_period * (self.lateness / period) >= self.last_draw

    def sustained(self) -> bool:
        """Calls asked in this period and the two before: a steady stream, not a wave (a
        block booked after a wave on a busy bucket would go stale unused)."""
        return self.asked > 0 and len(self.peaks) >= 2 and self.peaks[-1] > 0 < self.peaks[-2]

    def future(self, now: float) -> float:
        """Seconds of the blocks booked ahead of ``now`` and not handed out."""
        return sum(b.future(now) for b in self.blocks)


class SlotLeases:
    """Leases of the providers' buckets for one process; see the module docstring.

    ``lateness`` maps each leased provider to how late (seconds) a leased slot may start;
    the provider's ``DripRate`` must carry that in its margin. ``store`` is where blocks are
    booked (the same store the calls' own reservations use).
    """

    def __init__(
        self,
        store: BucketStore,
        lateness: Mapping[str, float],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._lateness = {p: late for p, late in lateness.items() if late > 0}
        self._clock = clock
        self._buckets: dict[LeaseKey, _Bucket] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.served = 0
        """Calls whose every slot came from a lease (no round trip on their path)."""
        self.renewals = 0

    def held(self) -> dict[LeaseKey, float]:
        """Seconds of each leased bucket's clock booked ahead and not yet handed out."""
        now = self._clock()
        return {key: bucket.future(now) for key, bucket in self._buckets.items()}

    def take(self, planned: Sequence[tuple[BucketDraw, DripRate]]) -> list[float] | None:
        """Each draw's clock ahead of now from the leases, or None: take the round trip.

        Only a call whose draws are all of leased provider buckets, each no larger than a
        block, is served or counted as demand; one bucket whose blocks cannot serve its
        draw sends the whole call to the store (and ``observe`` gets its answer).
        """
        if self._closed or not planned or not self._leaseable(planned):
            return None
        now = self._clock()
        buckets = [self._bucket(draw, rate) for draw, rate in planned]
        for bucket, (draw, _) in zip(buckets, planned, strict=True):
            bucket.asked += draw.seconds
            bucket.last_ask = now
            bucket.last_draw = draw.seconds
        self._start()
        taken: list[tuple[_Bucket, SlotBlock, float]] = []
        for bucket, (draw, _) in zip(buckets, planned, strict=True):
            found = bucket.clock_after(draw.seconds, now)
            if found is None:
                self._poke()  # no fresh block: the refresher decides whether to book one
                return None
            taken.append((bucket, *found))
        for bucket, block, clock in taken:
            block.take(clock)
            if bucket.fresh(now) < bucket.target():
                bucket.drained = True
                self._poke()  # book the next block before the next calls need it
        self.served += 1
        return [clock - now for _, _, clock in taken]

    def observe(
        self, planned: Sequence[tuple[BucketDraw, DripRate]], ahead: Sequence[float]
    ) -> None:
        """A call's own round trip answered ``ahead`` for its draws: whether each leased
        bucket was idle (its clock held no more than this period's own asks)."""
        if self._closed or not self._leaseable(planned):
            return
        now = self._clock()
        for (draw, _), a in zip(planned, ahead, strict=True):
            bucket = self._buckets.get((draw.provider, draw.kind))
            if bucket is not None:
                bucket.booked(now + a, draw.seconds, now)
        self._poke()  # a call found no block: whether to book one depends on this answer

    async def aclose(self) -> None:
        """Stop refreshing (a booking in flight is let go: unused capacity, not excess)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._buckets.clear()

    def _leaseable(self, planned: Sequence[tuple[BucketDraw, DripRate]]) -> bool:
        for draw, rate in planned:
            lateness = self._lateness.get(draw.provider)
            if draw.tenant_id or lateness is None:
                return False
            if draw.seconds > block_cap(rate, lateness):
                return False  # larger than any block could be
        return True

    def _bucket(self, draw: BucketDraw, rate: DripRate) -> _Bucket:
        key = (draw.provider, draw.kind)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[key] = _Bucket(rate, self._lateness[draw.provider])
        return bucket

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()  # of this loop
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    def _period(self) -> float:
        return max(min(self._lateness.values()) / 2, 0.01)

    async def _refresh(self) -> None:
        """Keep the blocks fresh while calls come; stop when none have for a while."""
        try:
            await self._refresh_loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("llm_budget_lease_refresh_failed")  # calls take round trips

    async def _refresh_loop(self) -> None:
        period = self._period()
        began = self._clock()
        wake = self._wake
        assert wake is not None
        while not self._closed:
            wake.clear()  # before the checks: a poke during the booking is not lost
            now = self._clock()
            if now - began >= period:
                rolled = int((now - began) / period)  # after a stall, the quiet periods too
                began += rolled * period
                for bucket in self._buckets.values():
                    bucket.peaks.append(bucket.asked)
                    bucket.peaks.extend([0.0] * min(rolled - 1, HISTORY))
                    bucket.asked = 0.0
            for key in [k for k, b in self._buckets.items() if now - b.last_ask > IDLE_AFTER]:
                del self._buckets[key]  # its blocks pass unused: nothing is booked ahead
            if not self._buckets:
                return
            due = [k for k, b in self._buckets.items() if b.needs_renewal(now, period)]
            if due:
                await self._renew(due, period)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=period)

    async def _renew(self, keys: Sequence[LeaseKey], period: float) -> None:
        """Book the next block of each bucket in one round trip."""
        draws = [BucketDraw(p, k, self._buckets[(p, k)].target(), "") for p, k in keys]
        sent = self._clock()
        try:
            ahead = await self._store.reserve_llm_budget(draws)
        except Exception:
            log.exception("llm_budget_lease_failed", providers=sorted({p for p, _ in keys}))
            await asyncio.sleep(period)  # the calls take round trips meanwhile
            return
        got = self._clock()
        self.renewals += 1
        for key, draw, a in zip(keys, draws, ahead, strict=True):
            bucket = self._buckets.get(key)
            if bucket is None or self._closed:
                continue  # stopped meanwhile: the block passes unused
            # The server booked between `sent` and `got`: the block ends at `got + a` for
            # the waits (never early) and carries the round trip as skew for lateness.
            end = got + a
            bucket.booked(end, draw.seconds, got)
            bucket.drained = False
            block = SlotBlock(booked_at=sent, cursor=end - draw.seconds, end=end, skew=got - sent)
            bucket.blocks.append(block)  # the older blocks' fresh slots are used first
