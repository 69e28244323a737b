"""Pooled connections and their sessions: the store's own operations skip asyncpg's reset
round trip, and the one connection user code gets back is reset in full."""

from __future__ import annotations

import asyncpg

from conveyor.store.postgres import PostgresStore


async def session_of(store: PostgresStore) -> tuple[int, str, int]:
    """The backend pid, its statement_timeout and its session advisory locks, seen through
    a store operation's pooled connection."""
    async with store.transaction() as conn:
        row = await conn.fetchrow(
            "SELECT pg_backend_pid() AS pid, current_setting('statement_timeout') AS timeout, "
            "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            " AND pid = pg_backend_pid()) AS locks"
        )
    assert row is not None
    return row["pid"], row["timeout"], row["locks"]


async def test_a_session_changed_in_user_code_is_reset_before_the_connection_is_reused(
    database_dsn: str,
) -> None:
    store = await PostgresStore.open(database_dsn, min_size=1, max_size=1)
    try:
        pid, timeout, _ = await session_of(store)
        async with store.transaction() as conn:
            await conn.execute("SET statement_timeout = '4321ms'")  # a session setting
            await conn.execute("SELECT pg_advisory_lock(424242)")  # a session lock
        again, after, locks = await session_of(store)
        assert again == pid  # the same connection came back from the pool
        assert after == timeout and after != "4321ms"
        assert locks == 0
    finally:
        await store.close()


async def test_a_store_operation_sends_no_reset_when_its_connection_goes_back(
    database_dsn: str,
) -> None:
    store = await PostgresStore.open(database_dsn, min_size=1, max_size=1)
    watcher = await asyncpg.connect(database_dsn)
    try:
        pid, _, _ = await session_of(store)
        # session_of's transaction asked for an event wake-up (store/event_wake.py): let it
        # go out first, on the same one connection.
        await store.event_wake.close()
        await store.list_workers()  # an ordinary operation on the one pooled connection
        last = await watcher.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
        # The backend's last statement is the operation's own, not asyncpg's reset
        # (pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL).
        assert "workers" in last and "RESET ALL" not in last, last
    finally:
        await watcher.close()
        await store.close()
