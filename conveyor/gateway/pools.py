"""One pooled HTTP client per provider host, and a semaphore of the pool's size in front.

The pool's connection limit equals the concurrency the gateway allows toward the host, and
a coroutine takes a semaphore slot before it sends. So a request never queues inside the
client for a socket (where its time would count against its own timeouts): it waits here,
before its attempt's clock starts, and once admitted it has a connection to itself.

The client is an ``httpx.AsyncClient`` whose transport is aiohttp's connection pool
(``httpx-aiohttp``). httpcore's own pool does work in proportion to its connections on
every request (each idle connection is checked for expiry, a socket poll each): with 200
connections to one host that cost 2.6-7.6 ms of CPU per call on this machine, against
0.9 ms for the whole call through aiohttp's pool (``benchmarks/gateway.py`` measures it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
from httpx_aiohttp import AiohttpTransport

from conveyor.gateway.config import ProviderConfig


class HostPool:
    """The client and slots of one origin (``scheme://host:port``)."""

    def __init__(self, origin: str, max_connections: int) -> None:
        self.origin = origin
        self.max_connections = max_connections
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits),
            limits=limits,
            # Each request carries its own timeouts (they differ per provider).
            timeout=None,
            follow_redirects=False,
        )
        self._slots = asyncio.Semaphore(max_connections)
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """Slots taken now: requests being sent or read."""
        return self._in_use

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[httpx.AsyncClient]:
        """Hold one of the host's slots for the length of one request and its reply."""
        async with self._slots:
            self._in_use += 1
            try:
                yield self.client
            finally:
                self._in_use -= 1

    async def aclose(self) -> None:
        """Close every connection of the pool."""
        await self.client.aclose()


class HostPools:
    """The pools of every configured provider, one per origin, shared where hosts are."""

    def __init__(self, providers: Mapping[str, ProviderConfig]) -> None:
        self._pools: dict[str, HostPool] = {}
        for provider in providers.values():
            if provider.origin not in self._pools:
                self._pools[provider.origin] = HostPool(provider.origin, provider.max_concurrency)

    def for_provider(self, provider: ProviderConfig) -> HostPool:
        """The pool that serves ``provider``'s host."""
        return self._pools[provider.origin]

    @property
    def pools(self) -> tuple[HostPool, ...]:
        """Every pool, one per origin."""
        return tuple(self._pools.values())

    async def aclose(self) -> None:
        """Close every pool."""
        for pool in self._pools.values():
            await pool.aclose()
