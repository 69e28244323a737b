"""Declarative agents over real processes: an ``--agents`` file served by ``conveyor worker``,
tasks submitted over HTTP to ``conveyor api``, replies from the mock LLM provider over real
HTTP (scripted per request content), a new version PUT while the worker runs."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import Client
from conveyor.core.api_keys import new_key
from conveyor.core.reply_schema import REPAIR_HEADING
from conveyor.mock_llm import MockConfig, MockLLM, ReplyRule
from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ApiProcess, bearer
from tests.e2e.conftest import CLI, ROOT, RunCli, process_env
from tests.e2e.test_api_end_to_end import llm_config
from tests.e2e.test_worker_process import FAST_LEASES

ADMIN = "b" * 40
SCHEMA = {
    "type": "object",
    "required": ["headline", "words"],
    "properties": {"headline": {"type": "string"}, "words": {"type": "integer"}},
    "additionalProperties": False,
}
AGENTS_TOML = f"""
[agents.headliner]
model = "writer"
system_prompt = "You write headlines."
prompt_template = "Write a headline. topic: {{{{ topic }}}}"
max_tokens = 200
max_attempts = 2
output_schema = '''{json.dumps(SCHEMA)}'''
"""
RULES = (
    ReplyRule(when=("Version two",), reply='{"headline": "second version", "words": 2}'),
    ReplyRule(when=("topic: repair-me", REPAIR_HEADING), reply='{"headline": "fixed", "words": 1}'),
    ReplyRule(when=("topic: repair-me",), reply='{"headline": 7}'),
    ReplyRule(when=("topic: stays-invalid",), reply="Sure! Here is a headline: Big Sale"),
    ReplyRule(when=("topic: ",), reply='```json\n{"headline": "fine", "words": 1}\n```'),
)
REFRESH = {"CONVEYOR_AGENT_REFRESH_SECONDS": "0.3"}


def start_worker(dsn: str, log: Path, agents: Path, config: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [*CLI, "worker", "--agents", str(agents), "--log-level", "WARNING"],
            env=process_env(dsn, **FAST_LEASES, **REFRESH, CONVEYOR_LLM_CONFIG=str(config)),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


async def stream_of(http: httpx.AsyncClient, task_id: int) -> tuple[str, str]:
    """The text a task's ``/stream`` relayed, and the state its end event carried."""
    text, event = [], ""
    async with http.stream("GET", f"/v1/tasks/{task_id}/stream") as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "chunk":
                text.append(json.loads(line[6:]).get("text", ""))
            elif line.startswith("data: ") and event == "end":
                return "".join(text), str(json.loads(line[6:]).get("state"))
    raise AssertionError("the stream closed without an end event")


async def wait_done(client: Client, task_id: int, log: Path) -> Any:
    deadline = time.monotonic() + 60
    while True:
        view = client.get(task_id)
        if view.state.value in ("succeeded", "dead", "cancelled"):
            return view
        assert time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.1)


@pytest.mark.timeout(180)
async def test_a_declarative_agent_answers_repairs_fails_and_takes_a_new_version(
    store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    await store.create_tenant("acme")
    issued = new_key(secrets.token_bytes)
    await store.create_api_key(issued.key_id, "acme", issued.secret_hash, "e2e")
    agents = tmp_path / "agents.toml"
    agents.write_text(AGENTS_TOML)
    api = ApiProcess(database_dsn, tmp_path / "api.log", CONVEYOR_ADMIN_KEY=ADMIN, **REFRESH)
    worker_log = tmp_path / "worker.log"
    admin = httpx.AsyncClient(base_url=api.url, headers=bearer(ADMIN), timeout=10)
    tenant = httpx.AsyncClient(base_url=api.url, headers=bearer(issued.token), timeout=10)
    try:
        async with MockLLM(MockConfig(reply_rules=RULES)) as mock:
            config = llm_config(tmp_path / "llm.json", mock.url)
            worker = start_worker(database_dsn, worker_log, agents, config)
            try:
                api.wait_ready()
                # The worker stores v1. Reading it through the API also brings the API's
                # submit check up to date (else within CONVEYOR_AGENT_REFRESH_SECONDS).
                deadline = time.monotonic() + 30
                while (await admin.get("/v1/agents/headliner")).status_code != 200:
                    assert worker.poll() is None and time.monotonic() < deadline, (
                        worker_log.read_text()
                    )
                    await asyncio.sleep(0.1)
                first = (await admin.get("/v1/agents/headliner")).json()
                assert first["version"] == 1 and first["source"] == "file", first
                assert first["fields"] == ["topic"]

                with Client(api.url, issued.token) as client:
                    # a field the template uses is missing: 422 naming it, nothing stored
                    refused = await tenant.post(
                        "/v1/tasks", json={"queue": "headliner", "payload": {"subject": "x"}}
                    )
                    assert refused.status_code == 422, refused.text
                    problem = refused.json()
                    assert problem["errors"][0]["field"] == "payload.topic", problem
                    assert "topic" in problem["detail"] and "version 1" in problem["detail"]
                    batch = await tenant.post(
                        "/v1/tasks/batch",
                        json={
                            "tasks": [
                                {"queue": "headliner", "payload": {"topic": "ok"}},
                                {"queue": "headliner", "payload": {"nope": 1}},
                            ]
                        },
                    )
                    assert batch.status_code == 422, batch.text
                    assert batch.json()["errors"][0]["field"] == "tasks.1.payload.topic"
                    assert list(client.list(queue="headliner")) == []

                    fine = client.submit("headliner", {"topic": "fine"})
                    repaired = client.submit("headliner", {"topic": "repair-me"})
                    invalid = client.submit("headliner", {"topic": "stays-invalid"})
                    fine_view = await wait_done(client, fine.id, worker_log)
                    repaired_view = await wait_done(client, repaired.id, worker_log)
                    invalid_view = await wait_done(client, invalid.id, worker_log)
                    # the output streamed to the task's live output like any agent's:
                    # both calls of the repaired run, then the end
                    streamed, ended = await stream_of(tenant, repaired.id)

                    # a new version through the API, taken by the running worker
                    changed = await admin.put(
                        "/v1/agents/headliner",
                        json={
                            "model": "writer",
                            "prompt_template": "Version two. topic: {{ topic }}",
                            "max_tokens": 200,
                            "output_schema": SCHEMA,
                        },
                    )
                    assert changed.status_code == 201, changed.text
                    assert changed.json()["version"] == 2
                    later = None
                    deadline = time.monotonic() + 60
                    while later is None or later.result["agent"]["version"] != 2:
                        assert time.monotonic() < deadline, worker_log.read_text()
                        made = client.submit("headliner", {"topic": "again"})
                        later = await wait_done(client, made.id, worker_log)
                        assert later.state.value == "succeeded", later
            finally:
                worker.terminate()
                assert worker.wait(timeout=30) == 0, worker_log.read_text()
        bad = await admin.put(
            "/v1/agents/headliner",
            json={"model": "writer", "prompt_template": "{{ topic }", "output_schema": {"type": 5}},
        )
        versions = (await admin.get("/v1/agents/headliner/versions")).json()
    finally:
        await admin.aclose()
        await tenant.aclose()
        api.stop()

    assert fine_view.state.value == "succeeded", fine_view
    assert fine_view.result == {
        "output": {"headline": "fine", "words": 1},
        "agent": {"role": "headliner", "version": 1, "model": "mock/mock-gpt", "repaired": False},
    }
    assert repaired_view.state.value == "succeeded", repaired_view
    assert repaired_view.result["output"] == {"headline": "fixed", "words": 1}
    assert repaired_view.result["agent"]["repaired"] is True
    assert streamed == '{"headline": 7}' + '{"headline": "fixed", "words": 1}', streamed
    assert ended == "succeeded"

    assert invalid_view.state.value == "dead", invalid_view
    assert invalid_view.attempts == 1  # not retried: the repair was the second chance
    error = invalid_view.last_error
    assert error is not None and error["type"] == "InvalidAgentReply", error
    assert "'headliner' v1" in error["message"] and "not JSON" in error["message"], error
    assert "Big Sale" in error["message"]  # the last reply, for whoever reads the DLQ

    assert later is not None and later.result["output"] == {
        "headline": "second version",
        "words": 2,
    }

    assert bad.status_code == 422, bad.text
    assert bad.json()["type"].endswith("invalid-agent-definition")
    fields = {e["field"] for e in bad.json()["errors"]}
    assert fields == {"prompt_template", "output_schema"}, bad.json()
    assert [v["version"] for v in versions["agents"]] == [2, 1]  # the refused PUT stored nothing


@pytest.mark.parametrize(
    ("agents", "args", "said"),
    [
        (None, [], "give --app package.module:app, --agents FILE or --stored-agent"),
        ('[agents.h]\nmodel = "writer"\n', ["--agents"], "agents.h.prompt_template: required"),
        (
            '[agents.h]\nmodel = "nope"\nprompt_template = "{{ a }}"\n',
            ["--agents"],
            "--agents: agents.h.model: unknown model 'nope'",
        ),
        (None, ["--stored-agent", "ghost"], "no definition is stored for ghost"),
    ],
)
def test_the_worker_refuses_declarative_agents_it_cannot_serve(
    run_cli: RunCli,
    database_dsn: str,
    tmp_path: Path,
    agents: str | None,
    args: list[str],
    said: str,
) -> None:
    config = llm_config(tmp_path / "llm.json", "http://127.0.0.1:9")
    if agents is not None:
        (tmp_path / "agents.toml").write_text(agents)
        args = [*args, str(tmp_path / "agents.toml")]
    env = process_env(database_dsn, CONVEYOR_LLM_CONFIG=str(config), COLUMNS="300")
    done = run_cli("worker", *args, env=env)
    assert done.returncode != 0
    assert said in " ".join((done.stdout + done.stderr).split()), done.stderr


def test_declarative_agents_need_the_llm_configuration(
    run_cli: RunCli, database_dsn: str, tmp_path: Path
) -> None:
    (tmp_path / "agents.toml").write_text(AGENTS_TOML)
    done = run_cli("worker", "--agents", str(tmp_path / "agents.toml"))
    assert done.returncode == 1
    assert "declarative agents call a model: set CONVEYOR_LLM_CONFIG" in done.stderr


async def test_enqueue_from_the_command_line_checks_the_template_too(
    run_cli: RunCli, store: PostgresStore
) -> None:
    await store.put_agent_definition(
        "headliner", {"model": "writer", "prompt_template": "About {{ brief.topic }}"}
    )
    refused = run_cli("enqueue", "headliner", "--payload", '{"brief": {}}')
    assert refused.returncode == 1
    said = " ".join(refused.stderr.split())
    assert "--payload: payload.brief.topic: payload.brief has no key 'topic'" in said, said
    assert "agent 'headliner' (version 1)" in said
    accepted = run_cli("enqueue", "headliner", "--payload", '{"brief": {"topic": "shoes"}}')
    assert accepted.returncode == 0, accepted.stderr
