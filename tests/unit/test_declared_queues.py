"""DeclaredQueues: a declared queue is trusted for a while; an undeclared one is asked again."""

from __future__ import annotations

import pytest

from conveyor.api.declared import DeclaredQueues
from conveyor.errors import UndeclaredQueue


async def test_declared_queues_are_remembered_and_undeclared_ones_are_not() -> None:
    declared = {"writer"}
    asked: list[list[str]] = []
    now = [0.0]

    async def require(queues: list[str]) -> None:
        asked.append(queues)
        missing = [q for q in queues if q not in declared]
        if missing:
            raise UndeclaredQueue(missing)

    cache = DeclaredQueues(require, ttl=30, clock=lambda: now[0])
    await cache.require(["writer"])
    await cache.require(["writer", "writer"])
    assert asked == [["writer"]]  # the second submit cost nothing
    with pytest.raises(UndeclaredQueue):
        await cache.require(["seo"])
    declared.add("seo")  # declared meanwhile: the next submit sees it at once
    await cache.require(["seo", "writer"])
    assert asked[-1] == ["seo"]
    now[0] = 31.0  # past the ttl: asked again
    await cache.require(["writer"])
    assert asked[-1] == ["writer"]
