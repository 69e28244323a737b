"""The per-key rate limit on the shared buckets in PostgreSQL: blocks are handed out from
memory, two processes share one key's limit, and a refusal says when to come back."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import pytest

from conveyor.api.problems import Problem
from conveyor.api.rate_limit import KeyRateLimit
from conveyor.store.params import BucketDraw
from conveyor.store.postgres import PostgresStore


class Counted:
    """The real store, counting its round trips."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.trips = 0

    async def reserve_llm_budget(self, draws: Sequence[BucketDraw]) -> list[float]:
        self.trips += 1
        return await self.store.reserve_llm_budget(draws)

    async def refund_llm_budget(self, draws: Sequence[BucketDraw]) -> None:
        self.trips += 1
        await self.store.refund_llm_budget(draws)


async def test_blocks_save_round_trips_and_the_limit_holds(store: PostgresStore) -> None:
    now = [0.0]
    buckets = Counted(store)
    limit = KeyRateLimit(buckets, 100, clock=lambda: now[0])  # burst 100: blocks up to 25
    admitted = 0
    began = time.monotonic()
    for _ in range(60):
        await limit.admit("k1")
        admitted += 1
    assert buckets.trips < 20  # 1 + 2 + 4 + 8 + 16 + 25 ...: far fewer than 60
    with pytest.raises(Problem) as over:
        for _ in range(200):  # the burst is spent well before this
            await limit.admit("k1")
            admitted += 1
    assert over.value.status == 429 and over.value.kind == "rate-limited"
    assert int(over.value.headers["Retry-After"]) >= 1
    # the burst, and what dripped in (100/s by the database's clock) while the test ran:
    # a busy machine (four test processes on two cores) took long enough for 3
    dripped = math.ceil((time.monotonic() - began) * 100)
    assert admitted <= 100 + 1 + dripped


async def test_two_processes_share_a_key(store: PostgresStore) -> None:
    one, two = KeyRateLimit(store, 0.05), KeyRateLimit(store, 0.05)  # burst 1, then 30 s
    await one.admit("k2")
    with pytest.raises(Problem) as refused:
        await two.admit("k2")
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 31
    with pytest.raises(Problem):  # now refused from memory
        await two.admit("k2")
    await two.admit("k3")  # another key, another bucket
