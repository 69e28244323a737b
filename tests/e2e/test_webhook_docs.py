"""The external runtime of docs/agents.md runs as written: its runtime (standard library
only), its App, and its commands, over real processes, to a succeeded task."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ApiProcess, free_port
from tests.e2e.conftest import CLI, ROOT, RunCli, process_env
from tests.e2e.test_worker_process import FAST_LEASES

AGENTS_MD = (ROOT / "docs" / "agents.md").read_text("utf-8")


def example() -> tuple[str, str, list[list[str]]]:
    """``# runtime.py``, ``# remote_agents.py`` and the shell lines that follow them."""
    section = AGENTS_MD[AGENTS_MD.index("## Agents served elsewhere") :]
    runtime = re.search(r"```python\n(# runtime\.py\n.*?)```", section, re.S)
    agents = re.search(r"```python\n(# remote_agents\.py\n.*?)```", section, re.S)
    shell = re.search(r"```sh\n(.*?)```", section, re.S)
    assert runtime is not None and agents is not None and shell is not None
    lines = [shlex.split(line.split("#")[0].replace("&", "")) for line in shell[1].splitlines()]
    return runtime[1], agents[1], [line for line in lines if line]


def start(
    command: list[str], dsn: str, folder: Path, env: dict[str, str], name: str
) -> subprocess.Popen[bytes]:
    """``python ...`` or ``conveyor ...`` started in ``folder`` (which it imports from),
    with the example's environment; its output in ``folder/logs/<name>.log``."""
    program = [sys.executable] if command[0] == "python" else CLI
    extra = ["--log-level", "WARNING"] if command[0] == "conveyor" else []
    with (folder / "logs" / f"{name}.log").open("w") as log:
        return subprocess.Popen(
            [*program, *command[1:], *extra],
            env=process_env(dsn, **FAST_LEASES, **env),
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


@pytest.mark.timeout(120)
async def test_the_summarize_example_runs_through_its_runtime(
    run_cli: RunCli, store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    runtime_py, agents_py, commands = example()
    runtime_port, api_port = free_port(), free_port()
    (tmp_path / "runtime.py").write_text(runtime_py.replace("8700", str(runtime_port)))
    (tmp_path / "remote_agents.py").write_text(agents_py.replace("8700", str(runtime_port)))
    env = dict(c[1].split("=", 1) for c in commands if c[0] == "export")
    env["CONVEYOR_WEBHOOK_CALLBACK_URL"] = f"http://127.0.0.1:{api_port}"
    assert set(env) == {
        "CONVEYOR_WEBHOOK_SECRET",
        "CONVEYOR_WEBHOOK_ALLOWED_HOSTS",
        "CONVEYOR_WEBHOOK_CALLBACK_URL",
    }
    enqueue, show = [c[1:] for c in commands if c[0] == "conveyor" and c[1] in ("enqueue", "show")]
    worker_line = next(c for c in commands if "worker" in c)
    worker_args = worker_line[worker_line.index("worker") :]
    logs = tmp_path / "logs"
    logs.mkdir()
    runtime = start(["python", "runtime.py"], database_dsn, tmp_path, env, "runtime")
    api = ApiProcess(database_dsn, logs / "api.log", port=api_port)
    worker = start(["conveyor", *worker_args], database_dsn, tmp_path, env, "worker")
    try:
        api.wait_ready()
        deadline = time.monotonic() + 30
        while not await store.queue_declarations(["summarize"]):
            assert time.monotonic() < deadline, (logs / "worker.log").read_text()
            await asyncio.sleep(0.1)
        made = run_cli(*enqueue)
        assert made.stdout.split() == ["1", "created"], made.stderr
        deadline = time.monotonic() + 60
        while (shown := json.loads(run_cli(*show).stdout))["state"] != "succeeded":
            assert shown["state"] != "dead", shown
            assert time.monotonic() < deadline, (shown, (logs / "worker.log").read_text())
            await asyncio.sleep(0.2)
    finally:
        for process in (worker, runtime):
            process.terminate()
            process.wait(timeout=30)
        api.stop()
    assert shown["result"] == {"summary": "Conveyor keeps the queue and..."}
