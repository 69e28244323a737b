"""Secrets never reach a log line or a problem body, over real processes: an API and a
worker run with a password in their DSN, an admin key, and an LLM configuration whose key
comes from the environment; requests come with no key, a malformed one, a wrong one, a
valid one and the admin key on a tenant route; an agent logs every secret it can find and
fails naming the DSN. Every log line and every body is searched for each secret."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import httpx
import pytest

from conveyor.core.api_keys import new_key
from conveyor.mock_llm import MockConfig, MockLLM
from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ApiProcess
from tests.e2e.test_worker_process import WorkerProcess


def with_password(dsn: str, password: str) -> str:
    """``dsn`` with ``password`` for its user (the test server trusts local connections,
    so any password is accepted and the DSN still works)."""
    scheme, rest = dsn.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':')[0]}:{password}@{host}"


@pytest.mark.timeout(120)
async def test_no_secret_in_any_log_line_or_problem_body(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    password = f"dsn-pw-{secrets.token_hex(8)}"
    admin_key = f"admin-{secrets.token_hex(16)}"
    llm_key = f"sk-mock-{secrets.token_hex(16)}"
    valid = new_key(secrets.token_bytes)
    wrong = new_key(secrets.token_bytes)
    malformed = f"not-a-key-{secrets.token_hex(8)}"
    await store.create_tenant("acme")
    await store.create_api_key(valid.key_id, "acme", valid.secret_hash, "e2e")
    dsn = with_password(database_dsn, password)
    api = ApiProcess(
        dsn, tmp_path / "api.log", "--log-level", "DEBUG", CONVEYOR_ADMIN_KEY=admin_key
    )
    bodies: list[str] = []
    try:
        async with MockLLM(MockConfig()) as mock:
            config = tmp_path / "llm.json"
            config.write_text(
                json.dumps(
                    {
                        "providers": {
                            "mock": {
                                "kind": "openai",
                                "base_url": mock.url,
                                "api_key_env": "MOCK_API_KEY",
                            }
                        },
                        "aliases": {"writer": ["mock/mock-gpt"]},
                    }
                )
            )
            env = {
                "CONVEYOR_LLM_CONFIG": str(config),
                "MOCK_API_KEY": llm_key,
                "CONVEYOR_ADMIN_KEY": admin_key,
            }
            worker = WorkerProcess(dsn, tmp_path / "worker.log", "--log-level", "DEBUG", env=env)
            try:
                api.wait_ready()
                async with httpx.AsyncClient(base_url=api.url) as http:
                    for authorization in (
                        None,
                        f"Bearer {malformed}",
                        f"Bearer {wrong.token}",
                        f"Bearer {admin_key}",  # an admin key on a tenant route: 403
                        f"Token {valid.token}",  # the wrong scheme
                    ):
                        headers = {} if authorization is None else {"Authorization": authorization}
                        reply = await http.post(
                            "/v1/tasks", json={"queue": "careless"}, headers=headers
                        )
                        assert reply.status_code in (401, 403), reply.text
                        bodies.append(reply.text)
                    ok = {"Authorization": f"Bearer {valid.token}"}
                    deadline = time.monotonic() + 30
                    while not await store.queue_declarations(["careless"]):
                        assert time.monotonic() < deadline, worker.output
                        await asyncio.sleep(0.1)
                    made = await http.post("/v1/tasks", json={"queue": "careless"}, headers=ok)
                    assert made.status_code == 201, made.text
                    task_id = made.json()["id"]
                    missing = await http.get("/v1/tasks/999999999", headers=ok)
                    bodies.append(missing.text)
                    deadline = time.monotonic() + 30
                    while (await http.get(f"/v1/tasks/{task_id}", headers=ok)).json()[
                        "state"
                    ] != "dead":
                        assert time.monotonic() < deadline, worker.output
                        await asyncio.sleep(0.2)
            finally:
                assert worker.stop() == 0, worker.output
    finally:
        api.stop()
    api_log, worker_log = (tmp_path / "api.log").read_text(), worker.output
    for secret in (password, admin_key, llm_key, valid.secret, wrong.secret, malformed):
        assert secret not in api_log, secret
        assert secret not in worker_log, secret
        assert all(secret not in body for body in bodies), secret
    # what the careless agent logged is there, masked
    [careless] = [
        json.loads(line) for line in worker_log.splitlines() if '"event": "careless"' in line
    ]
    assert careless["dsn"] == with_password(database_dsn, "***")
    assert careless["api_key"] == "[redacted]"
    assert careless["header"] == "Bearer [redacted]" and careless["note"] == "key [redacted]"
    assert careless["task_id"] == task_id and careless["tenant_id"] == "acme"
    # and the API wrote an access line per request, naming the tenant once it is known
    access = [json.loads(line) for line in api_log.splitlines() if '"event": "request"' in line]
    submits = [a for a in access if a.get("route") == "/v1/tasks" and a["method"] == "POST"]
    assert [a["status"] for a in submits] == [401, 401, 401, 403, 401, 201]
    assert submits[-1]["tenant_id"] == "acme" and submits[-1]["latency_ms"] > 0
