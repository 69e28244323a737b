"""The gateway's shared limits across two real worker processes: the provider's request
budget and a tenant's monthly token budget hold whatever the number of replicas, and every
call lands in ``llm_calls`` under its task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.e2e.test_worker_process import WorkerProcess, wait_until_finished
from tests.integration.helpers import fetchval

LIMIT, WINDOW = 20, 3.0  # the mock's own limit, and the gateway's budget set to the same
TOKEN_BUDGET = 120  # the "metered" tenant's month: room for a few calls, not for ten


def gateway_config(url: str) -> dict[str, Any]:
    return {
        "providers": {
            "mock": {
                "kind": "openai",
                "base_url": url,
                "api_key": "k",
                "requests_per_minute": LIMIT,
                "rate_window": WINDOW,
            }
        },
        "aliases": {"writer": ["mock/mock-gpt"]},
        "default_max_tokens": 20,
        "retry": {"max_attempts": 2, "base": 0.05, "cap": 0.2},
    }


@pytest.mark.timeout(120)
async def test_two_workers_share_the_providers_budget_and_a_tenants_month(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    await store.create_tenant("metered")
    await store.set_tenant_llm_limits("metered", monthly_token_budget=TOKEN_BUDGET)
    async with MockLLM(MockConfig(rate_limit_rpm=LIMIT, rate_limit_window=WINDOW)) as mock:
        config_path = tmp_path / "llm.json"
        config_path.write_text(json.dumps(gateway_config(mock.url)))
        env = {"CONVEYOR_LLM_CONFIG": str(config_path)}
        open_ = [NewTask("chat", {"n": i}) for i in range(40)]
        metered = [NewTask("chat", {"n": i}, tenant_id="metered") for i in range(10)]
        ids = [r.task_id for r in await store.enqueue_batch([*open_, *metered])]
        workers = [WorkerProcess(database_dsn, tmp_path / f"w{i}.log", env=env) for i in range(2)]
        try:
            await wait_until_finished(store, ids, timeout=90)
        finally:
            codes = [w.stop() for w in workers]
        stats = mock.stats
    assert codes == [0, 0], [w.output for w in workers]
    records = [await store.get_task(i) for i in ids]
    assert all(r.state is TaskState.SUCCEEDED for r in records[:40])
    assert stats.limit_429s == 0  # 50 calls at 20 per 3 s: the budget spaced them

    # The metered tenant's month held: what it used fits its budget, the rest died clearly.
    done = [r for r in records[40:] if r.state is TaskState.SUCCEEDED]
    dead = [r for r in records[40:] if r.state is TaskState.DEAD]
    assert done and dead and len(done) + len(dead) == 10
    assert sum(r.result["tokens"] for r in done if r.result) <= TOKEN_BUDGET
    assert all("monthly tokens" in str(r.last_error) for r in dead)
    assert stats.requests_total == 40 + len(done)  # the refused calls sent nothing

    # Every call is a row under its task (the workers wrote their logs on shutdown).
    rows = await fetchval(
        store, "SELECT count(DISTINCT task_id) FROM llm_calls WHERE outcome = 'ok'"
    )
    assert rows == 40 + len(done)
