"""A worker process at start-up: it waits for a database that is not there yet, and a
signal that comes before it is ready stops it cleanly instead of killing it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from tests.e2e.conftest import CLI, ROOT, process_env
from tests.support.tcp_proxy import CuttableProxy


def start_worker(
    dsn: str, log_path: Path, app: str = "tests.e2e.agents:app", **env: str
) -> subprocess.Popen[bytes]:
    with log_path.open("w") as log:
        return subprocess.Popen(
            [*CLI, "worker", "--app", app, "--log-level", "INFO"],
            env=process_env(dsn, CONVEYOR_POLL_SECONDS="0.2", **env),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM installed (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


async def exit_code(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return process.poll()


@pytest.mark.timeout(60)
async def test_a_signal_in_the_first_instant_stops_the_worker_cleanly(
    database_dsn: str, tmp_path: Path
) -> None:
    worker = start_worker(
        database_dsn, tmp_path / "worker.log", app="tests.e2e.slow_import_agents:app"
    )
    try:
        # The handler is there while the app is still importing (3 s), long before the
        # event loop runs: a signal then is kept, not fatal.
        started = time.monotonic()
        while not catches_sigterm(worker.pid):
            assert worker.poll() is None
            assert time.monotonic() - started < 2.5, "no SIGTERM handler while importing"
            await asyncio.sleep(0.001)
        worker.send_signal(signal.SIGTERM)
        assert await exit_code(worker, 30) == 0, (tmp_path / "worker.log").read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


@pytest.mark.timeout(90)
async def test_the_worker_waits_for_the_database_then_serves(
    database_dsn: str, store: PostgresStore, tmp_path: Path
) -> None:
    proxy, dsn = await CuttableProxy.for_dsn(database_dsn)
    proxy.cut()  # the database is "down" when the worker starts
    log_path = tmp_path / "worker.log"
    worker = start_worker(dsn, log_path, CONVEYOR_DATABASE_WAIT_SECONDS="60")
    try:
        await asyncio.sleep(2.5)
        assert worker.poll() is None, log_path.read_text()
        assert "database_unavailable" in log_path.read_text()
        proxy.restore()
        task = await store.enqueue(NewTask("echo", {"n": 1}))
        deadline = time.monotonic() + 30
        while (await store.get_task(task.task_id)).state.value != "succeeded":
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        assert await exit_code(worker, 30) == 0, log_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        await proxy.close()


@pytest.mark.timeout(60)
async def test_a_stop_while_waiting_for_the_database_ends_the_wait(
    database_dsn: str, tmp_path: Path
) -> None:
    proxy, dsn = await CuttableProxy.for_dsn(database_dsn)
    proxy.cut()
    log_path = tmp_path / "worker.log"
    worker = start_worker(dsn, log_path, CONVEYOR_DATABASE_WAIT_SECONDS="120")
    try:
        await asyncio.sleep(2.0)
        worker.send_signal(signal.SIGTERM)
        assert await exit_code(worker, 10) == 0, log_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        await proxy.close()


@pytest.mark.timeout(60)
async def test_a_broken_llm_configuration_stops_the_worker_at_start_naming_the_setting(
    database_dsn: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    worker = start_worker(database_dsn, log_path, CONVEYOR_LLM_CONFIG=str(tmp_path / "llm.toml"))
    code = await exit_code(worker, timeout=30)
    if code is None:
        worker.kill()
        worker.wait()
    log = log_path.read_text()
    assert code == 1, log
    assert "CONVEYOR_LLM_CONFIG" in log and "llm.toml" in log
