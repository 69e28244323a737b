"""Where the shared drip buckets live: Redis when ``REDIS_URL`` is set, else PostgreSQL.

Redis takes the buckets' round trip off the database (one Lua script per reservation);
PostgreSQL needs nothing more to run. Either way every worker shares the same buckets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from conveyor.gateway.shared_budget import BucketStore

REDIS_URL_ENV = "REDIS_URL"


def bucket_store_from_env(environ: Mapping[str, str] | None, postgres: BucketStore) -> BucketStore:
    """``RedisBuckets`` at ``REDIS_URL`` when it is set and non-empty, else ``postgres``."""
    url = (os.environ if environ is None else environ).get(REDIS_URL_ENV, "").strip()
    if not url:
        return postgres
    from conveyor.gateway.redis_buckets import RedisBuckets  # redis is only loaded if used

    return RedisBuckets.from_url(url)
