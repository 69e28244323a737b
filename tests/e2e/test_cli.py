"""The ``conveyor`` command as a user runs it: real processes, a real database."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import conveyor
from conveyor.store.params import ClaimRequest, Finish, LeaseRef
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.e2e.conftest import ROOT, RunCli, process_env


def assert_clear_errors(run_cli: RunCli, cases: list[tuple[tuple[str, ...], str]]) -> None:
    """Each command fails with the hint in its message, never with a traceback or a raw
    database error."""
    for args, hint in cases:
        result = run_cli(*args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert "database error" not in result.stderr, (args, result.stderr)
        assert hint in (result.stderr + result.stdout), (args, result.stderr)


def test_every_way_to_start_the_command_answers_its_version() -> None:
    for module in ("conveyor", "conveyor.cli"):
        started = subprocess.run(
            [sys.executable, "-m", module, "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith(f"conveyor {conveyor.__version__} "), started.stdout
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = script["conveyor"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_migrate_is_idempotent(run_cli: RunCli) -> None:
    first = run_cli("migrate")
    assert first.returncode == 0, first.stderr
    assert "up to date" in first.stdout  # the test database is already migrated


def test_enqueue_show_status_and_cancel(run_cli: RunCli) -> None:
    created = run_cli("enqueue", "copywriter", "--payload", '{"topic": "shoes"}', "--priority", "1")
    assert created.returncode == 0, created.stderr
    task_id = created.stdout.split()[0]
    assert created.stdout.strip().endswith("created")

    again = run_cli("enqueue", "copywriter", "--idempotency-key", "k1")
    same = run_cli("enqueue", "copywriter", "--idempotency-key", "k1")
    assert again.stdout.split()[0] == same.stdout.split()[0]
    assert "already existed" in same.stdout

    shown = run_cli("show", task_id)
    record = json.loads(shown.stdout)
    assert record["state"] == "queued" and record["priority"] == 1
    assert record["payload"] == {"topic": "shoes"}

    status = run_cli("status", "--json")
    queues = {q["queue"]: q for q in json.loads(status.stdout)["queues"]}
    assert queues["copywriter"]["queued"] == 2

    cancelled = run_cli("cancel", task_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    assert json.loads(run_cli("show", task_id).stdout)["state"] == "cancelled"


async def test_dlq_list_and_replay(run_cli: RunCli, store: PostgresStore) -> None:
    assert run_cli("enqueue", "seo", "--max-attempts", "1").returncode == 0
    [claimed] = await store.claim(ClaimRequest(("seo",), 1, "w", 30))
    error = {"type": "Boom", "message": "provider exploded"}
    lease = LeaseRef(claimed.id, claimed.lease_token)
    await store.finish([Finish(lease, TaskState.DEAD, error=error)])

    listed = run_cli("dlq", "list", "--queue", "seo")
    assert listed.returncode == 0
    assert str(claimed.id) in listed.stdout and "provider exploded" in listed.stdout

    refused = run_cli("dlq", "replay")
    assert refused.returncode == 2 and "--all" in refused.stderr

    replayed = run_cli("dlq", "replay", "--id", str(claimed.id))
    assert "replayed 1 task" in replayed.stdout
    record = await store.get_task(claimed.id)
    assert record.state is TaskState.QUEUED and record.attempts == 0


async def test_pause_and_resume(run_cli: RunCli, store: PostgresStore) -> None:
    assert run_cli("queues", "pause", "social").returncode == 0
    assert run_cli("enqueue", "social").returncode == 0
    assert await store.claim(ClaimRequest(("social",), 10, "w", 30)) == []
    assert run_cli("queues", "resume", "social").returncode == 0
    assert len(await store.claim(ClaimRequest(("social",), 10, "w", 30))) == 1


def test_a_queue_nothing_declares_is_refused_until_declared(run_cli: RunCli) -> None:
    typo = run_cli("enqueue", "copywritr")
    assert typo.returncode == 1 and "Traceback" not in typo.stderr
    assert "'copywritr' (did you mean 'copywriter'?) is not declared" in typo.stderr
    assert "--allow-undeclared" in typo.stderr
    assert "copywritr" not in run_cli("status", "--json").stdout  # nothing was stored

    anyway = run_cli("enqueue", "launch_day", "--allow-undeclared")
    assert anyway.returncode == 0 and anyway.stdout.strip().endswith("created"), anyway.stderr
    declared = run_cli("queues", "declare", "translator", "seo")
    assert declared.returncode == 0, declared.stderr
    assert "declared translator" in declared.stdout
    assert "seo was already declared (by plan)" in declared.stdout
    assert run_cli("enqueue", "translator").returncode == 0
    listed = run_cli("queues", "list").stdout
    assert "translator" in listed and "launch_day" not in listed


def test_retention_and_tenants(run_cli: RunCli) -> None:
    kept = run_cli("retention", "--older-than", "90d")
    assert kept.returncode == 0 and "dropped 0 partition" in kept.stdout
    added = run_cli("tenants", "add", "acme", "--name", "Acme Corp", "--weight", "2")
    assert added.returncode == 0 and "acme" in added.stdout
    assert "Acme Corp" in run_cli("tenants", "list").stdout


def test_bad_input_is_a_clear_error_not_a_traceback(run_cli: RunCli, database_dsn: str) -> None:
    cases = [
        (("retention", "--older-than", "ninety"), "--older-than"),
        (("retention", "--older-than", "3m"), "less than a day"),
        (("queues", "pause", "bad queue!"), "queue name"),
        (("tenants", "add", "no spaces"), "tenant id"),
        (("enqueue", "copywriter", "--payload", "{not json"), "--payload"),
        (("enqueue", "bad queue!"), "queue name"),
        (("enqueue", "copywriter", "--priority", "11"), "priority"),
        (("enqueue", "copywriter", "--tenant", "nobody"), "unknown tenant"),
        (("show", "999999"), "not found"),
        (("worker", "--app", "no.such.module:app"), "--app"),
        (("mock-llm", "--port", "99999"), "99999 is not a TCP port"),
    ]
    assert_clear_errors(run_cli, cases)

    broken = run_cli("status", env=process_env(database_dsn, CONVEYOR_LEASE_SECONDS="soon"))
    assert broken.returncode == 2 and "CONVEYOR_LEASE_SECONDS" in broken.stderr
    unreachable = run_cli(
        "status", env=process_env("postgresql://nobody@127.0.0.1:1/none", COLUMNS="200")
    )
    assert unreachable.returncode == 1 and "cannot connect" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    for url, hint in [
        ("", "is set but empty"),
        ("postgresql://nobody@127.0.0.1:abc/none", "port 'abc'"),
        ("postgresql://nobody@[::1/none", "IPv6 host goes in brackets"),
    ]:
        refused = run_cli("status", env=process_env(url, COLUMNS="200"))
        assert refused.returncode == 2 and "DATABASE_URL: " in refused.stderr, url
        assert hint in refused.stderr, url
        assert "Traceback" not in refused.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root's embedded server changes folders")
def test_as_root_the_embedded_server_does_not_open_a_private_folder(
    run_cli: RunCli, tmp_path: Path
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    env = {k: v for k, v in process_env("").items() if k != "DATABASE_URL"}
    env.update(CONVEYOR_EMBEDDED_DIR=str(private / "pgdata"), COLUMNS="200")
    refused = run_cli("status", env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"{private} (0700)" in refused.stderr and "chmod go+rx" in refused.stderr
    assert private.stat().st_mode & 0o777 == 0o700


def test_ids_payloads_and_numbers_are_checked_before_the_database(run_cli: RunCli) -> None:
    past_int64, past_int32 = str(2**63), str(2**31)
    cases = [
        (("show", "-1"), "'-1' is not a task id"),
        (("show", past_int64), "is not a task id"),
        (("cancel", "0"), "'0' is not a task id"),
        (("dlq", "replay", "--id", "-1"), "is not a task id"),
        (("llm", "usage", "default", "--task", past_int64), "is not a task id"),
        (("enqueue", "copywriter", "--payload", '{"a": NaN}'), "NaN is not JSON"),
        (("enqueue", "copywriter", "--payload", '{"a": Infinity}'), "Infinity is not JSON"),
        (("enqueue", "copywriter", "--payload", "[1]"), "must be a JSON object"),
        (("enqueue", "copywriter", "--max-attempts", past_int32), "--max-attempts"),
        (("tenants", "agent", "default", "seo", "--max-concurrent", past_int32), "2147483647"),
        (("llm", "limits", "default", "--tokens", past_int64), "larger than the database"),
        (("enqueue", "copywriter", "--delay", "999999999d"), "past the year 9999"),
        (("retention", "--older-than", "99999999d"), "before the year 1"),
    ]
    assert_clear_errors(run_cli, cases)


def test_an_app_module_that_fails_at_import_shows_the_users_own_line(
    run_cli: RunCli, database_dsn: str, tmp_path: Path
) -> None:
    modules = {
        "raises_at_import": ('import json\nraise RuntimeError("no config")\n', "line 2"),
        "bad_syntax": ("def handler(:\n    pass\n", "line 1"),
        "missing_dependency": ("import no_such_dependency_xyz\n", "line 1"),
    }
    env = process_env(database_dsn, COLUMNS="200")
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    for module, (source, line) in modules.items():
        (tmp_path / f"{module}.py").write_text(source)
        result = run_cli("worker", "--app", f"{module}:app", env=env)
        assert result.returncode == 1, result.stderr
        assert f"importing {module} raised" in result.stderr
        assert f'{tmp_path / module}.py", {line}' in result.stderr  # their file and line
        assert source.splitlines()[int(line.split()[1]) - 1].strip() in result.stderr
        assert "importlib" not in result.stderr and "conveyor" not in result.stderr
        assert len(result.stderr.splitlines()) <= 6, result.stderr


def test_plans_and_overrides_from_the_cli(run_cli: RunCli) -> None:
    assert "enterprise" in run_cli("plans", "list").stdout
    assert "plan free" in run_cli("tenants", "add", "shop", "--plan", "free").stdout
    refused = run_cli("enqueue", "analyst", "--tenant", "shop")
    assert refused.returncode == 1 and "plan 'free' allows copywriter, seo" in refused.stderr
    assert "--enable" in refused.stderr  # the message says how to allow it
    enabled = run_cli("tenants", "agent", "shop", "analyst", "--enable", "--monthly-limit", "1")
    assert enabled.returncode == 0 and "monthly limit 1" in enabled.stdout
    assert run_cli("enqueue", "analyst", "--tenant", "shop").returncode == 0
    over = run_cli("enqueue", "analyst", "--tenant", "shop")
    assert over.returncode == 1 and "used 1 of its 1" in over.stderr
    assert run_cli("tenants", "usage", "shop").stdout.split()[-2:] == ["analyst", "1"]
    unknown = run_cli("tenants", "add", "shop", "--plan", "gold")
    assert unknown.returncode == 1 and "unknown plan 'gold'" in unknown.stderr


def test_limits_from_the_cli(run_cli: RunCli) -> None:
    changed = run_cli("plans", "set", "pro", "--max-concurrent", "3", "--start-rate", "120/1m")
    assert changed.returncode == 0, changed.stderr
    assert "max concurrent/role 3" in changed.stdout and "start rate 120/1m" in changed.stdout
    assert "120/1m" in run_cli("plans", "list").stdout
    run_cli("tenants", "add", "shop", "--plan", "pro")
    agent = run_cli("tenants", "agent", "shop", "seo", "--start-rate", "5/s")
    assert agent.returncode == 0 and "start rate 5/1s" in agent.stdout
    capped = run_cli("queues", "set", "researcher", "--max-running", "50", "--aging", "2m")
    assert capped.returncode == 0 and "max running 50, aging 120s" in capped.stdout
    uncapped = run_cli("queues", "set", "researcher", "--max-running", "0")
    assert "max running unlimited, aging 120s" in uncapped.stdout
    cases = [
        (("plans", "set", "gold", "--weight", "2"), "unknown plan 'gold'"),
        (("plans", "set", "pro", "--start-rate", "fast"), "--start-rate"),
        (("tenants", "agent", "shop", "seo", "--start-rate", "0/1m"), "--start-rate"),
        (("queues", "set", "researcher", "--aging", "soon"), "--aging"),
        (("queues", "set", "researcher", "--max-running", "-1"), "--max-running"),
        (("mock-llm", "--latency", "abc"), "--latency"),
    ]
    assert_clear_errors(run_cli, cases)


async def test_llm_usage_prices_and_limits_from_the_cli(
    run_cli: RunCli, store: PostgresStore
) -> None:
    priced = run_cli("llm", "price", "house-model", "--input", "2", "--output", "8")
    assert priced.returncode == 0 and "$2 in, $8 out" in priced.stdout, priced.stderr
    assert "house-model" in run_cli("llm", "prices").stdout
    run_cli("tenants", "add", "shop")
    row = {
        "created_at": "2026-12-02T10:00:00+00:00", "tenant_id": "shop", "task_id": 5,
        "group_id": "launch", "requested": "writer", "provider": "openai",
        "model": "house-model", "attempt": 1, "outcome": "ok", "stream": False,
        "prompt_tokens": 1000, "completion_tokens": 500, "usage_estimated": False,
        "latency_ms": 800.0, "ttft_ms": 120.0, "status": 200, "error": None,
    }  # fmt: skip
    await store.record_llm_calls([row, {**row, "task_id": 6, "group_id": None}])
    usage = run_cli("llm", "usage", "shop", "--month", "2026-12", "--group", "launch")
    assert usage.returncode == 0, usage.stderr
    assert "house-model" in usage.stdout and "total cost: $0.006000" in usage.stdout
    everything = run_cli("llm", "usage", "shop", "--month", "2026-12")
    assert "total cost: $0.012000" in everything.stdout

    limited = run_cli("llm", "limits", "shop", "--tokens", "5000", "--spend", "12.5")
    assert limited.returncode == 0, limited.stderr
    assert "5,000 tokens/month, $12.50 spend/month" in limited.stdout
    cleared = run_cli("llm", "limits", "shop", "--tokens", "plan")
    assert "unlimited tokens/month, $12.50 spend/month" in cleared.stdout
    plan = run_cli("plans", "set", "pro", "--llm-rpm", "90", "--spend-limit", "250")
    assert plan.returncode == 0 and "90 req/min" in plan.stdout and "$250.00/month" in plan.stdout
    assert_clear_errors(
        run_cli,
        [
            (("llm", "usage", "shop", "--month", "12-2026"), "YYYY-MM"),
            (("llm", "limits", "shop", "--spend", "lots"), "--spend"),
            (("llm", "limits", "nobody", "--tokens", "5"), "unknown tenant"),
            (("llm", "price", "m", "--input", "-1", "--output", "1"), "--input"),
        ],
    )
