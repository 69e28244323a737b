"""Where the shared drip buckets live: Redis when ``REDIS_URL`` is set, else PostgreSQL.

Redis takes the buckets' round trip off the database (one Lua script per reservation);
PostgreSQL needs nothing more to run. Either way every worker shares the same buckets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Protocol

from conveyor.store.params import BucketDraw

REDIS_URL_ENV = "REDIS_URL"


class BucketStore(Protocol):
    """Where the drip buckets' clocks are kept: PostgresStore, RedisBuckets, or a wrapper."""

    async def reserve_llm_budget(self, draws: Sequence[BucketDraw]) -> list[float]:
        """Add each draw's seconds to its bucket; how far each clock now runs ahead."""
        ...

    async def refund_llm_budget(self, draws: Sequence[BucketDraw]) -> None:
        """Take each draw's seconds back off its bucket."""
        ...


def bucket_store_from_env(environ: Mapping[str, str] | None, postgres: BucketStore) -> BucketStore:
    """``RedisBuckets`` at ``REDIS_URL`` when it is set and non-empty, else ``postgres``."""
    url = (os.environ if environ is None else environ).get(REDIS_URL_ENV, "").strip()
    if not url:
        return postgres
    from conveyor.gateway.budgets.redis_buckets import RedisBuckets  # redis is only loaded if used

    return RedisBuckets.from_url(url)
