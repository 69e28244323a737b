"""Which queues are declared, remembered for a while so a submit costs no round trip for it.

A queue nothing declares is refused (a typo must not wait forever). Declarations only grow
in practice (a worker served it, an operator declared it, a plan names it), so a queue
found declared is trusted for ``ttl`` seconds; an undeclared one is asked again every time,
so declaring a queue takes effect at the next submit.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from conveyor.errors import UndeclaredQueue


class DeclaredQueues:
    """A positive cache in front of the store's ``require_declared_queues``."""

    def __init__(
        self,
        require: Callable[[list[str]], Awaitable[None]],
        *,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._require = require
        self._ttl = ttl
        self._clock = clock
        self._until: dict[str, float] = {}

    async def require(self, queues: Iterable[str]) -> None:
        """Raise UndeclaredQueue if one of ``queues`` is not declared."""
        now = self._clock()
        unknown = sorted({q for q in queues if self._until.get(q, 0.0) <= now})
        if not unknown:
            return
        try:
            await self._require(unknown)
        except UndeclaredQueue as exc:
            # no suggestions: they are drawn from every tenant's queues
            raise UndeclaredQueue(exc.queues) from None
        if len(self._until) > 100_000:
            self._until.clear()  # bounded, whatever names clients send
        for queue in unknown:
            self._until[queue] = now + self._ttl
