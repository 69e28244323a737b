"""Metrics over real processes: an API and a worker after a known workload (tasks through
the mock LLM) report counters that add up to the work done, and a real Prometheus server
scraping both answers the queue depth through its query API."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor import Client
from conveyor.core.api_keys import new_key
from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ApiProcess, free_port
from tests.e2e.test_api_end_to_end import llm_config
from tests.e2e.test_worker_process import WorkerProcess
from tests.support.prometheus import PrometheusServer, binary

TASKS = 6
FAST_METRICS = {"CONVEYOR_METRICS_SECONDS": "0.2"}


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``url``'s /metrics, keyed by name and labels."""
    reply = httpx.get(f"{url}/metrics", timeout=5)
    reply.raise_for_status()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


async def tokens_in_llm_calls(store: PostgresStore, calls: int, timeout: float = 30) -> int:
    """SUM(prompt_tokens + completion_tokens) of llm_calls once ``calls`` rows are written."""
    deadline = time.monotonic() + timeout
    while True:
        async with store.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(sum(prompt_tokens + completion_tokens), 0) AS t"
                " FROM llm_calls"
            )
        assert row is not None
        if row["n"] >= calls:
            assert row["n"] == calls, row
            return int(row["t"])
        assert time.monotonic() < deadline, f"only {row['n']} calls written"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(180)
async def test_the_counters_of_an_api_and_a_worker_add_up_to_the_work_done(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    await store.create_tenant("acme")
    issued = new_key(secrets.token_bytes)
    await store.create_api_key(issued.key_id, "acme", issued.secret_hash, "e2e")
    api = ApiProcess(database_dsn, tmp_path / "api.log", **FAST_METRICS)
    port = free_port()
    try:
        async with MockLLM(MockConfig()) as mock:
            config = llm_config(tmp_path / "llm.json", mock.url)
            worker = WorkerProcess(
                database_dsn,
                tmp_path / "worker.log",
                "--metrics-port",
                str(port),
                "--queue",
                "chat",
                env={"CONVEYOR_LLM_CONFIG": str(config), **FAST_METRICS},
            )
            try:
                api.wait_ready()
                deadline = time.monotonic() + 30
                while not await store.queue_declarations(["chat"]):  # the worker registered
                    assert time.monotonic() < deadline, worker.output
                    await asyncio.sleep(0.1)
                with Client(api.url, issued.token) as client:
                    made = [client.submit("chat", {"n": n}) for n in range(TASKS)]
                    deadline = time.monotonic() + 60
                    while not all(client.get(m.id).state.value == "succeeded" for m in made):
                        assert time.monotonic() < deadline, worker.output
                        await asyncio.sleep(0.2)
                tokens = await tokens_in_llm_calls(store, TASKS)
                worker_url = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 30
                while True:  # an outcome is counted once written; the last flush may lag
                    seen = scrape(worker_url)
                    done = total(seen, "conveyor_tasks_total", queue="chat", outcome="succeeded")
                    if done == TASKS or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
            finally:
                assert worker.stop() == 0, worker.output
        deadline = time.monotonic() + 30
        while True:  # the API's sampler reads the queues every 0.2 s
            served = scrape(api.url)
            if total(served, "conveyor_queue_depth", queue="chat") == 0 and (
                total(served, "conveyor_queue_running_tasks", queue="chat") == 0
            ):
                break
            assert time.monotonic() < deadline, served
            await asyncio.sleep(0.2)
    finally:
        api.stop()

    # the worker: every task succeeded once, and its tokens are those in llm_calls
    assert done == TASKS
    assert total(seen, "conveyor_tasks_total", queue="chat") == TASKS  # no retry, no death
    assert total(seen, "conveyor_tasks_claimed_total") == TASKS
    assert total(seen, "conveyor_llm_calls_total", outcome="ok") == TASKS
    assert total(seen, "conveyor_llm_tokens_total") == tokens > 0
    assert total(seen, "conveyor_task_duration_seconds_count", queue="chat") == TASKS
    assert total(seen, "conveyor_task_queue_wait_seconds_count", queue="chat") == TASKS
    assert total(seen, "conveyor_db_pool_acquire_seconds_count") > 0
    assert total(seen, "conveyor_worker_free_slots") == total(seen, "conveyor_worker_concurrency")
    # the API: each submit and each read counted under its route template, not its path
    submits = total(served, "conveyor_http_requests_total", method="POST", route="/v1/tasks")
    assert submits == TASKS
    reads = total(served, "conveyor_http_requests_total", route="/v1/tasks/{task_id}")
    assert reads >= TASKS
    assert total(served, "conveyor_http_requests_total", status_class="5xx") == 0
    assert total(served, "conveyor_http_request_duration_seconds_count", route="/v1/tasks") == TASKS
    assert total(served, "conveyor_tenant_queue_depth", queue="chat", tenant="acme") == 0


@pytest.mark.timeout(240)
async def test_a_real_prometheus_scrapes_the_api_and_a_worker_and_answers_the_queue_depth(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    binary("prometheus")  # skips, saying why, only where the package cannot be installed
    await store.create_tenant("acme")
    # the worker serves "echo" only: tasks of "waiting" stay queued, a known depth
    await store.enqueue_batch([NewTask(queue="waiting", tenant_id="acme", payload={})] * 7)
    api = ApiProcess(database_dsn, tmp_path / "api.log", **FAST_METRICS)
    worker_port = free_port()
    worker = WorkerProcess(
        database_dsn,
        tmp_path / "worker.log",
        "--metrics-port",
        str(worker_port),
        "--queue",
        "echo",
        env=FAST_METRICS,
    )
    prometheus = None
    try:
        api.wait_ready()
        prometheus = PrometheusServer(
            tmp_path,
            free_port(),
            {"api": f"127.0.0.1:{api.port}", "worker": f"127.0.0.1:{worker_port}"},
        )
        prometheus.wait_for('up{job="api"}', 1)
        prometheus.wait_for('up{job="worker"}', 1)
        prometheus.wait_for('conveyor_queue_depth{job="api", queue="waiting"}', 7)
        prometheus.wait_for('conveyor_queue_depth{job="worker", queue="waiting"}', 7)
        prometheus.wait_for('max(conveyor_tenant_queue_depth{queue="waiting", tenant="acme"})', 7)
        # and the worker's own gauges: nothing of "echo" runs, every slot is free
        prometheus.wait_for("conveyor_worker_free_slots - conveyor_worker_concurrency", 0)
    finally:
        if prometheus is not None:
            prometheus.stop()
        assert worker.stop() == 0, worker.output
        api.stop()


@pytest.mark.timeout(120)
async def test_an_api_of_several_processes_reports_the_sum_of_all(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    folder = tmp_path / "multiproc"
    api = ApiProcess(
        database_dsn,
        tmp_path / "api.log",
        "--workers",
        "2",
        PROMETHEUS_MULTIPROC_DIR=str(folder),
        **FAST_METRICS,
    )
    try:
        api.wait_ready()
        # each process keeps its samples in files of its own, made when it imports the
        # metrics (so both have them whoever takes the requests): wait for both
        deadline = time.monotonic() + 60
        while len({p.stem.rsplit("_", 1)[-1] for p in folder.glob("histogram_*.db")}) < 2:
            assert time.monotonic() < deadline, sorted(folder.iterdir())
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=api.url, timeout=5) as client:
            for _ in range(20):  # whichever process takes each one
                assert (await client.get("/healthz")).status_code == 200
        # every scrape, whichever process answers it, counts all 20
        for _ in range(6):
            served = scrape(api.url)
            assert total(served, "conveyor_http_requests_total", route="/healthz") == 20
    finally:
        assert api.stop() == 0, api.log_path.read_text()
