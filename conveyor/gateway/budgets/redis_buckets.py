"""The shared drip buckets in Redis: the same semantics as ``llm_buckets`` in PostgreSQL.

Each bucket is one string key holding its theoretical arrival time (``tat``, epoch seconds)
under ``<prefix>:{<provider>}:<tenant_id or *>:<kind>``. All draws of one call run in one
Lua script, so a reservation is atomic however many workers race for the same bucket, and
the script reads the clock with ``TIME``: only the Redis server's clock counts, never a
worker's. The provider is the key's hash tag, so one call's draws (always of one provider)
share a Redis Cluster slot. A key expires shortly after its ``tat`` passes; a missing key
is an empty bucket, so an expired one reads exactly as the PostgreSQL row would.

Redis errors are translated here: a refused or dropped connection raises
``DatabaseUnavailable`` and anything else ``StoreError``, each naming ``REDIS_URL``. Nothing
falls back to PostgreSQL: two workers on two backends would each grant the full budget.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from conveyor.errors import ConfigurationError, DatabaseUnavailable, StoreError
from conveyor.store.dsn import redact_dsn
from conveyor.store.params import BucketDraw

DEFAULT_PREFIX = "conveyor:llm"
EXPIRY_GRACE_MS = 1000
"""How long a key outlives its ``tat``: any value is correct, this one keeps a key around
across the small gaps of a busy bucket instead of recreating it."""
SOCKET_TIMEOUT = 5.0
"""Seconds to connect and to wait for a reply (unless the URL sets its own): a Redis that
hangs fails the call instead of stalling it."""

# KEYS: one bucket per draw. ARGV: each draw's seconds, then the expiry grace in ms.
# PostgreSQL's reserve_llm_budget, key by key: tat = max(tat, now) + seconds.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local grace = tonumber(ARGV[#KEYS + 1])
local ahead = {}
for i, key in ipairs(KEYS) do
  local tat = now
  local stored = redis.call('GET', key)
  if stored then tat = math.max(tonumber(stored), now) end
  tat = tat + tonumber(ARGV[i])
  local ttl = math.ceil((tat - now) * 1000) + grace
  if ttl > 0 then
    redis.call('SET', key, string.format('%.6f', tat), 'PX', ttl)
  else
    redis.call('DEL', key)
  end
  ahead[i] = string.format('%.6f', tat - now)
end
return ahead
"""

# PostgreSQL's refund_llm_budget: tat -= seconds, for positive seconds, on existing buckets.
# A clock moved into the past is deleted: it reads as the empty bucket it is equal to.
_REFUND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local grace = tonumber(ARGV[#KEYS + 1])
for i, key in ipairs(KEYS) do
  local seconds = tonumber(ARGV[i])
  local stored = seconds > 0 and redis.call('GET', key)
  if stored then
    local tat = tonumber(stored) - seconds
    local ttl = math.ceil((tat - now) * 1000) + grace
    if ttl > 0 then
      redis.call('SET', key, string.format('%.6f', tat), 'PX', ttl)
    else
      redis.call('DEL', key)
    end
  end
end
return 0
"""


class RedisBuckets:
    """A ``BucketStore`` in Redis, for gateways that keep rate buckets off the database."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        where: str = "Redis",
    ) -> None:
        """Use ``client`` (closed by ``aclose``); keys start with ``prefix``.

        ``where`` names the server in error messages (``from_url`` passes the URL)."""
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"a bucket key prefix holds no braces (the hash tag), got {prefix!r}")
        self._client = client
        self._prefix = prefix
        self._where = where
        self._reserve = client.register_script(_RESERVE)
        self._refund = client.register_script(_REFUND)

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX) -> RedisBuckets:
        """Buckets on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``).

        Connects on first use; a malformed URL raises ``ConfigurationError`` now."""
        try:
            client = Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=SOCKET_TIMEOUT,
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"REDIS_URL {redact_dsn(url)!r} is not a Redis URL: {exc} "
                "(e.g. redis://localhost:6379/0; unset it to keep the buckets in PostgreSQL)"
            ) from exc
        return cls(client, prefix=prefix, where=f"Redis at {redact_dsn(url)} (REDIS_URL)")

    def key(self, draw: BucketDraw) -> str:
        """The key of ``draw``'s bucket."""
        return f"{self._prefix}:{{{draw.provider}}}:{draw.tenant_id or '*'}:{draw.kind}"

    async def reserve_llm_budget(self, draws: Sequence[BucketDraw]) -> list[float]:
        """Take the next slot of each bucket; how far each clock now runs ahead, in order."""
        if not draws:
            return []
        async with self._translated("reserve a slot"):
            ahead = await self._reserve(keys=self._keys(draws), args=self._args(draws))
        return [float(a) for a in ahead]

    async def refund_llm_budget(self, draws: Sequence[BucketDraw]) -> None:
        """Give time back to existing buckets (unused tokens, a refused call)."""
        given = [d for d in draws if d.seconds > 0]  # the script skips them too: no round trip
        if not given:
            return
        async with self._translated("give a slot back"):
            await self._refund(keys=self._keys(given), args=self._args(given))

    async def aclose(self) -> None:
        """Close the client and its connections."""
        await self._client.aclose()

    def _keys(self, draws: Sequence[BucketDraw]) -> list[str]:
        return [self.key(d) for d in draws]

    @staticmethod
    def _args(draws: Sequence[BucketDraw]) -> list[str]:
        for d in draws:
            if not math.isfinite(d.seconds):
                raise ValueError(f"a draw's seconds must be finite, got {d}")
        return [repr(float(d.seconds)) for d in draws] + [str(EXPIRY_GRACE_MS)]

    @asynccontextmanager
    async def _translated(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise DatabaseUnavailable(
                f"cannot {what} in the LLM rate buckets: no answer from {self._where}: {exc}; "
                "start Redis, or unset REDIS_URL to keep the buckets in PostgreSQL"
            ) from exc
        except redis_errors.RedisError as exc:
            raise StoreError(
                f"cannot {what} in the LLM rate buckets on {self._where}: {exc}"
            ) from exc
