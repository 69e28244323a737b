"""Each tenant's LLM limits and model override, read from its plan and cached a while.

Every call of a tenant needs its plan's rates, its monthly budgets and the model override
of the calling agent; reading them from PostgreSQL each time would add a round trip to
every call. They are cached per (tenant, queue) for ``ttl`` seconds (30 by default), so a
changed plan or override reaches every worker within that time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from conveyor.errors import UnknownTenant
from conveyor.store.records import TenantLLMPolicy

DEFAULT_POLICY_TTL = 30.0
MAX_ENTRIES = 50_000


class PolicyStore(Protocol):
    """What the cache reads from (PostgresStore has it)."""

    async def tenant_llm_policy(self, tenant_id: str, queue: str) -> TenantLLMPolicy: ...


class TenantPolicies:
    """A TTL cache of ``TenantLLMPolicy`` per (tenant, queue); one read per key at a time."""

    def __init__(
        self,
        store: PolicyStore,
        *,
        ttl: float = DEFAULT_POLICY_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, TenantLLMPolicy | None]] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[TenantLLMPolicy | None]] = {}

    async def get(self, tenant_id: str, queue: str | None) -> TenantLLMPolicy | None:
        """The tenant's policy for ``queue``; None for a tenant that does not exist."""
        key = (tenant_id, queue or "")
        entry = self._entries.get(key)
        now = self._clock()
        if entry is not None and entry[0] > now:
            return entry[1]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[TenantLLMPolicy | None] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            policy = await self._load(*key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, no "never retrieved" warning
            raise
        finally:
            del self._loading[key]
        future.set_result(policy)
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (now + self._ttl, policy)
        return policy

    def forget(self) -> None:
        """Drop every cached policy (the next call of each tenant reads it again)."""
        self._entries.clear()

    async def _load(self, tenant_id: str, queue: str) -> TenantLLMPolicy | None:
        try:
            return await self._store.tenant_llm_policy(tenant_id, queue)
        except UnknownTenant:
            return None
