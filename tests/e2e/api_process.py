"""``conveyor api`` as a real process on a free loopback port, for e2e tests."""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.core.api_keys import new_key
from conveyor.store.params import ClaimRequest, Finish, LeaseRef, NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.e2e.conftest import CLI, ROOT, process_env
from tests.support.databases import DatabaseFactory

ADMIN_KEY = "a" * 40
"""The environment's admin key of a ``module_api`` server."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiProcess:
    """A running API server; ``url`` is its base URL."""

    def __init__(
        self, dsn: str, log_path: Path, *args: str, port: int | None = None, **env: str
    ) -> None:
        self.dsn = dsn
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with log_path.open("a") as log:
            self.process = subprocess.Popen(
                [*CLI, "api", "--port", str(self.port), "--log-level", "WARNING", *args],
                env=process_env(dsn, **env),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"API not ready: {self.log_path.read_text()}")

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def module_api(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """One API server on a database of its own for a whole test module (yield from it in a
    module-scoped fixture); each test then works with tenants, queues and ids of its own.
    Keys are not cached, so a revocation is seen by the next request."""
    dsn = asyncio.run(database_factory.create())
    log = tmp_path_factory.mktemp("api") / "api.log"
    server = ApiProcess(dsn, log, CONVEYOR_ADMIN_KEY=ADMIN_KEY, CONVEYOR_API_KEY_CACHE_SECONDS="0")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        asyncio.run(database_factory.drop(dsn))


@pytest.fixture(scope="module", name="api")
def module_api_fixture(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """``api``: the module's one server (import this into a test module to use it)."""
    yield from module_api(database_factory, tmp_path_factory)


@pytest.fixture(name="store")
async def module_store_fixture(api: ApiProcess) -> AsyncIterator[PostgresStore]:
    """``store``: a store on the module server's database, in place of the per-test one."""
    opened = await PostgresStore.open(api.dsn, min_size=1, max_size=4)
    yield opened
    await opened.close()


def unique(name: str) -> str:
    """``name`` made unique within the module's database: ``acme-3f9a0c``."""
    return f"{name}-{secrets.token_hex(3)}"


async def issue_key(store: PostgresStore, tenant: str | None, *, create: bool = True) -> str:
    """A new key's token for ``tenant`` (created first unless ``create`` is False), or an
    admin key (``tenant`` None)."""
    if tenant is not None and create:
        await store.create_tenant(tenant)
    issued = new_key(secrets.token_bytes)
    await store.create_api_key(issued.key_id, tenant, issued.secret_hash, "test")
    return issued.token


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of ``token``."""
    return {"Authorization": f"Bearer {token}"}


async def make_dead(store: PostgresStore, tenant: str, queue: str, n: int = 1) -> list[int]:
    """``n`` tasks of ``tenant`` in the dead-letter queue, each with its last error."""
    made = await store.for_tenant(tenant).enqueue_batch(
        [NewTask(queue, {"n": i}, max_attempts=1) for i in range(n)]
    )
    claimed = await store.claim(ClaimRequest((queue,), n, "test-worker", 60))
    await store.finish(
        [
            Finish(
                LeaseRef(c.id, c.lease_token),
                TaskState.DEAD,
                error={"type": "Boom", "message": f"task {c.id}"},
            )
            for c in claimed
        ]
    )
    return [m.task_id for m in made]
