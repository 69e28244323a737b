"""``conveyor worker`` as a real process: it drains the queue, stops cleanly on SIGTERM, and
a kill -9 loses nothing because its leases expire and another worker takes the tasks."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.e2e.conftest import CLI, ROOT, process_env

FAST_LEASES = {
    "CONVEYOR_LEASE_SECONDS": "2",
    "CONVEYOR_HEARTBEAT_SECONDS": "0.5",
    "CONVEYOR_REAPER_SECONDS": "0.5",
    "CONVEYOR_POLL_SECONDS": "0.5",
}


class WorkerProcess:
    """``conveyor worker`` in a child process, its output in a log file."""

    def __init__(
        self,
        dsn: str,
        log_path: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        app: str = "tests.e2e.agents:app",
    ) -> None:
        self.log_path = log_path
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                [*CLI, "worker", "--app", app, "--log-level", "WARNING", *extra],
                env=process_env(dsn, **FAST_LEASES, **(env or {})),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and wait for the exit status."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    @property
    def output(self) -> str:
        return self.log_path.read_text()


async def wait_until_finished(store: PostgresStore, ids: list[int], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        statuses = await store.queue_status()
        if all(s.queued + s.scheduled + s.running == 0 for s in statuses):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"tasks still active after {timeout}s: {await store.queue_status()}")


@pytest.mark.timeout(90)
async def test_worker_drains_the_queue_and_stops_on_sigterm(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    results = await store.enqueue_batch(
        [NewTask(queue="echo", payload={"n": i}) for i in range(300)]
        + [NewTask(queue="echo", payload={"fail": "permanent"}, max_attempts=3)]
    )
    worker = WorkerProcess(database_dsn, tmp_path / "worker.log")
    try:
        await wait_until_finished(store, [r.task_id for r in results], timeout=45)
    finally:
        code = worker.stop()
    assert code == 0, worker.output
    states = [(await store.get_task(r.task_id)).state for r in results]
    assert states.count(TaskState.SUCCEEDED) == 300
    assert states[-1] is TaskState.DEAD
    [row] = await store.list_workers()
    assert row.state == "stopped"


@pytest.mark.timeout(120)
async def test_kill_9_loses_nothing(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    results = await store.enqueue_batch(
        [NewTask(queue="echo", payload={"n": i, "sleep": 0.5, "effect": i}) for i in range(200)]
    )
    doomed = WorkerProcess(database_dsn, tmp_path / "doomed.log", "--concurrency", "50")
    while not any(s.running for s in await store.queue_status()):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert doomed.stop(signal.SIGKILL) == -signal.SIGKILL
    survivor = WorkerProcess(database_dsn, tmp_path / "survivor.log")
    try:
        await wait_until_finished(store, [r.task_id for r in results], timeout=60)
    finally:
        assert survivor.stop() == 0, survivor.output
    records = [await store.get_task(r.task_id) for r in results]
    assert all(r.state is TaskState.SUCCEEDED for r in records)
    # the tasks the killed worker held ran again, on a later attempt
    assert any(r.attempts > 1 for r in records)
    # ... and every side effect is recorded exactly once, by one of the task's runs
    for n, result in enumerate(results):
        effect = await store.get_effect("default", f"once:effect:{n}")
        assert effect is not None and effect.result == {"by_task": result.task_id}


@pytest.mark.timeout(120)
async def test_worker_recycles_itself_in_place(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    results = await store.enqueue_batch(
        [NewTask(queue="echo", payload={"n": i}) for i in range(100)]
    )
    worker = WorkerProcess(
        database_dsn,
        tmp_path / "recycled.log",
        "--max-tasks-per-process",
        "40",
        "--log-level",
        "INFO",
    )
    try:
        await wait_until_finished(store, [r.task_id for r in results], timeout=60)
        assert worker.process.poll() is None  # same pid, still serving
    finally:
        code = worker.stop()
    assert code == 0, worker.output
    assert worker.output.count('"event": "recycling"') >= 2, worker.output
    records = [await store.get_task(r.task_id) for r in results]
    assert all(r.state is TaskState.SUCCEEDED for r in records)


@pytest.mark.timeout(120)
async def test_sigterm_mid_load_finishes_in_flight_and_leaves_the_rest(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    results = await store.enqueue_batch(
        [NewTask(queue="echo", payload={"n": i, "sleep": 0.3}) for i in range(400)]
    )
    first = WorkerProcess(database_dsn, tmp_path / "first.log", "--concurrency", "50")
    while sum(s.running for s in await store.queue_status()) == 0:
        await asyncio.sleep(0.05)
    assert first.stop() == 0, first.output  # default --grace: in-flight tasks finish
    after_stop = [await store.get_task(r.task_id) for r in results]
    assert not any(r.state is TaskState.RUNNING for r in after_stop)
    done_by_first = {r.id for r in after_stop if r.state is TaskState.SUCCEEDED}
    assert 0 < len(done_by_first) < 400
    assert all(r.attempts == 0 for r in after_stop if r.state is TaskState.QUEUED)

    second = WorkerProcess(database_dsn, tmp_path / "second.log")
    try:
        await wait_until_finished(store, [r.task_id for r in results], timeout=60)
    finally:
        assert second.stop() == 0, second.output
    records = [await store.get_task(r.task_id) for r in results]
    # nothing lost, and nothing ran twice because of the shutdown
    assert all(r.state is TaskState.SUCCEEDED and r.attempts == 1 for r in records)
    assert all(r.result["attempt"] == 1 for r in records)


@pytest.mark.timeout(120)
async def test_a_memory_hog_kills_only_its_child(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    hog = await store.enqueue(NewTask(queue="hog", max_attempts=3))
    others = await store.enqueue_batch([NewTask(queue="echo", payload={"n": i}) for i in range(50)])
    worker = WorkerProcess(database_dsn, tmp_path / "hog.log")
    try:
        await wait_until_finished(store, [hog.task_id], timeout=60)
        assert worker.process.poll() is None  # the worker survived
        later = await store.enqueue(NewTask(queue="echo", payload={"after": True}))
        await wait_until_finished(store, [later.task_id], timeout=30)
    finally:
        assert worker.stop() == 0, worker.output
    record = await store.get_task(hog.task_id)
    assert record.state is TaskState.DEAD and record.attempts == 1
    assert "memory limit of 128 MB" in record.last_error["message"]
    states = [(await store.get_task(r.task_id)).state for r in [*others, later]]
    assert all(state is TaskState.SUCCEEDED for state in states)


@pytest.mark.timeout(60)
async def test_a_second_signal_forces_exit_and_leases_bring_the_work_back(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    result = await store.enqueue(NewTask(queue="echo", payload={"sleep": 30}))
    worker = WorkerProcess(database_dsn, tmp_path / "forced.log")
    while sum(s.running for s in await store.queue_status()) == 0:
        await asyncio.sleep(0.05)
    worker.process.send_signal(signal.SIGTERM)  # drain: would wait up to --grace 30 s
    await asyncio.sleep(0.3)
    assert worker.stop(signal.SIGINT) == 130, worker.output  # the second one does not wait
    record = await store.get_task(result.task_id)
    assert record.state is TaskState.RUNNING  # left leased; the reaper will bring it back
    await asyncio.sleep(2.5)  # past the 2 s lease of FAST_LEASES
    reaped = await store.reap_expired()
    assert reaped is not None and reaped.requeued == (result.task_id,)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape_until(port: int, name: str, value: float, timeout: float = 30) -> None:
    """Scrape the worker's /metrics until the unlabelled sample ``name`` equals ``value``."""
    deadline = asyncio.get_running_loop().time() + timeout
    seen = None
    async with httpx.AsyncClient() as client:
        while asyncio.get_running_loop().time() < deadline:
            try:
                reply = await client.get(f"http://127.0.0.1:{port}/metrics")
            except httpx.TransportError:  # not listening yet
                await asyncio.sleep(0.1)
                continue
            found = {
                s.name: s.value
                for family in text_string_to_metric_families(reply.text)
                for s in family.samples
                if not s.labels
            }
            seen = found.get(name)
            if seen == value:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{name} was {seen}, not {value}, after {timeout}s")


@pytest.mark.timeout(90)
async def test_worker_serves_its_metrics(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    worker = WorkerProcess(database_dsn, tmp_path / "metrics.log", "--metrics-port", str(port))
    try:
        await scrape_until(port, "conveyor_tasks_in_flight", 0)
        task = await store.enqueue(NewTask(queue="echo", payload={"sleep": 3}))
        await scrape_until(port, "conveyor_tasks_in_flight", 1)
        await wait_until_finished(store, [task.task_id], timeout=30)
        await scrape_until(port, "conveyor_tasks_claimed_total", 1)
    finally:
        assert worker.stop() == 0, worker.output


def outward_address() -> str | None:
    """An IPv4 address of this machine other than loopback, if it has one (no packet sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: a route is looked up, nothing sent
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.mark.timeout(90)
async def test_metrics_host_keeps_the_metrics_on_the_address_given(
    database_dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    worker = WorkerProcess(
        database_dsn,
        tmp_path / "metrics.log",
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
    )
    try:
        await scrape_until(port, "conveyor_tasks_in_flight", 0)  # served on loopback
        elsewhere = outward_address()
        if elsewhere is not None:  # the default (all interfaces) would answer here
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((elsewhere, port), timeout=5).close()
    finally:
        assert worker.stop() == 0, worker.output
