"""The whole path over real processes: a tenant submits over HTTP, a worker runs the agent,
the agent calls the mock LLM provider through the gateway, and the tenant reads the result
and what the call cost over HTTP."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import pytest

from conveyor import Client
from conveyor.core.api_keys import new_key
from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ApiProcess
from tests.e2e.test_worker_process import WorkerProcess


def llm_config(path: Path, url: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "providers": {"mock": {"kind": "openai", "base_url": url, "api_key": "k"}},
                "aliases": {"writer": ["mock/mock-gpt"]},
                "default_max_tokens": 20,
            }
        )
    )
    return path


@pytest.mark.timeout(120)
async def test_submit_over_http_run_through_the_mock_llm_read_the_cost(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    await store.create_tenant("acme")
    issued = new_key(secrets.token_bytes)
    await store.create_api_key(issued.key_id, "acme", issued.secret_hash, "e2e")
    api = ApiProcess(database_dsn, tmp_path / "api.log")
    try:
        async with MockLLM(MockConfig()) as mock:
            config = llm_config(tmp_path / "llm.json", mock.url)
            worker = WorkerProcess(
                database_dsn, tmp_path / "worker.log", env={"CONVEYOR_LLM_CONFIG": str(config)}
            )
            try:
                api.wait_ready()
                deadline = time.monotonic() + 30
                while not await store.queue_declarations(["chat"]):  # the worker registered
                    assert time.monotonic() < deadline, worker.output
                    await asyncio.sleep(0.1)
                with Client(api.url, issued.token) as client:
                    made = [client.submit("chat", {"n": n}) for n in range(5)]
                    deadline = time.monotonic() + 60
                    while True:
                        views = [client.get(m.id) for m in made]
                        if all(v.state.value == "succeeded" for v in views):
                            break
                        assert time.monotonic() < deadline, worker.output
                        await asyncio.sleep(0.2)
            finally:
                assert worker.stop() == 0, worker.output  # its call log is written by now
            requests = mock.stats.requests_total
        with Client(api.url, issued.token) as client:
            usage = [client.get(m.id).usage for m in made]
    finally:
        api.stop()
    assert requests == 5
    assert all(v.result is not None and v.result["tokens"] > 0 for v in views)
    for line in usage:  # each task's own call, and what it cost, read over HTTP
        assert line is not None and line.calls == 1 and line.prompt_tokens > 0, usage
        assert line.cost > 0 and line.by_model[0].model == "mock-gpt", usage
