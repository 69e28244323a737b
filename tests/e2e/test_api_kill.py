"""An API process killed mid-load loses no acknowledged task, and the client's retries
make none twice.

Clients submit at a steady rate through ``conveyor.AsyncClient``, each submit with its own
idempotency key. The API is SIGKILLed (no graceful shutdown: requests in flight are cut)
and started again on the same port; the clients ride it out with their retries. Then every
submit that got a 2xx is in the database, under the id it was told, exactly once.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg

from conveyor import AsyncClient, ClientRetries
from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ApiProcess
from tests.e2e.test_api_tasks import key_for

CLIENTS = 8
PAUSE = 0.02  # per client between submits: ~400 submits/s offered in all


async def test_a_killed_api_loses_no_acknowledged_task(
    database_dsn: str, store: PostgresStore, tmp_path: Path
) -> None:
    await store.declare_queues(["writer"])
    token = await key_for(store, "acme")
    log = tmp_path / "api.log"
    server = ApiProcess(database_dsn, log)
    acknowledged: dict[str, int] = {}
    failed: list[BaseException] = []
    stop = asyncio.Event()
    retries = ClientRetries(attempts=60, backoff=0.05, max_wait=0.5)

    async def submit_steadily(client_no: int, client: AsyncClient) -> None:
        n = 0
        while not stop.is_set():
            key = f"c{client_no}-{n}"
            n += 1
            try:
                made = await client.submit("writer", {"n": n}, idempotency_key=key)
            except Exception as exc:  # the test reports it; the load goes on
                failed.append(exc)
                continue
            acknowledged[key] = made.id
            await asyncio.sleep(PAUSE)

    try:
        await asyncio.to_thread(server.wait_ready)
        async with AsyncClient(server.url, token, retries=retries) as client:
            load = [asyncio.create_task(submit_steadily(i, client)) for i in range(CLIENTS)]
            await asyncio.sleep(1.5)
            before_kill = len(acknowledged)
            server.process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(server.process.wait)
            server = ApiProcess(database_dsn, log, port=server.port)
            await asyncio.to_thread(server.wait_ready)
            after_restart = len(acknowledged)
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*load)
    finally:
        server.stop()

    assert not failed, failed[:3]
    assert before_kill > 50 and len(acknowledged) > after_restart + 50  # load on both sides
    conn = await asyncpg.connect(database_dsn)
    try:
        rows = await conn.fetch(
            "SELECT idempotency_key, array_agg(id) AS ids FROM tasks"
            " WHERE tenant_id = 'acme' GROUP BY idempotency_key"
        )
    finally:
        await conn.close()
    stored = {row["idempotency_key"]: list(row["ids"]) for row in rows}
    assert all(len(ids) == 1 for ids in stored.values())  # no key made two tasks
    assert None not in stored  # every task came with its key
    missing = {k: i for k, i in acknowledged.items() if stored.get(k) != [i]}
    assert not missing  # every acknowledged submit is stored under the id it was given
