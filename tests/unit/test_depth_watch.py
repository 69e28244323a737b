"""The API's backpressure snapshot: refusals from memory, its own accepted tasks counted
until the next read, and 503 once the database has been unreachable for a while."""

from __future__ import annotations

import pytest

from conveyor.api.backpressure import DepthWatch
from conveyor.api.problems import Problem
from conveyor.errors import DatabaseUnavailable
from conveyor.store.records import QueueLoad


async def test_the_snapshot_sheds_and_counts_what_it_accepts() -> None:
    now = [0.0]
    loads = [QueueLoad("q", 2, 1, None)]
    failing: list[Exception] = []

    async def read(window: float) -> list[QueueLoad]:
        if failing:
            raise failing[0]
        return loads

    watch = DepthWatch(read, stale_after=5.0, clock=lambda: now[0])
    await watch.refresh()
    watch.check([("q", 10), ("other", 10)])
    watch.accepted(["q", "other"])
    with pytest.raises(Problem) as shed:
        watch.check([("q", 10)])
    assert shed.value.status == 429 and shed.value.headers["Retry-After"] == "300"
    watch.check([("q", 5)])  # normal work until 4

    loads = [QueueLoad("q", 2, 6, 60)]  # 60 finished in the last minute: 1 a second
    await watch.refresh()
    with pytest.raises(Problem) as shed:
        watch.check([("q", 5)])
    assert shed.value.headers["Retry-After"] == "3"  # 6 - 4 + 1 at 1 a second

    failing.append(DatabaseUnavailable("down"))
    await watch.refresh()
    watch.check([("q", 1)])  # the last snapshot holds for a while
    now[0] = 6.0
    with pytest.raises(Problem) as away:
        watch.check([("q", 1)])
    assert away.value.status == 503 and away.value.headers["Retry-After"] == "5"
    failing.clear()
    await watch.refresh()
    watch.check([("q", 1)])
