"""What backpressure reads: the depth and drain of the queues that shed (``queue_loads``)."""

from __future__ import annotations

from conveyor.core.shedding import URGENT_FACTOR
from conveyor.store.connection import Conn
from conveyor.store.records import QueueLoad
from conveyor.store.sql import q


async def queue_loads(conn: Conn, window_seconds: float) -> list[QueueLoad]:
    """Every queue with a depth threshold: its depth (counted up to the highest mark + 1)
    and, at or past its threshold, the tasks it finished in the last ``window_seconds``."""
    rows = await conn.fetch(q("queue_loads"), window_seconds, URGENT_FACTOR)
    return [QueueLoad(r["name"], r["depth_threshold"], r["depth"], r["finished"]) for r in rows]
