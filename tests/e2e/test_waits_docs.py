"""The waiting agent of docs/agents.md runs as written: its module, then its commands."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from pathlib import Path

import pytest

from conveyor.store.postgres import PostgresStore
from tests.e2e.conftest import ROOT, RunCli
from tests.e2e.test_readme import start_worker

AGENTS_MD = (ROOT / "docs" / "agents.md").read_text("utf-8")


def example() -> tuple[str, list[list[str]]]:
    """The module ``# approvals.py`` and the shell lines that follow it."""
    section = AGENTS_MD[AGENTS_MD.index("### `ctx.wait_for(name, timeout)`") :]
    module = re.search(r"```python\n(# approvals\.py\n.*?)```", section, re.S)
    shell = re.search(r"```sh\n(.*?)```", section, re.S)
    assert module is not None and shell is not None
    lines = [shlex.split(line.split("#")[0].replace("&", "")) for line in shell[1].splitlines()]
    return module[1], [line for line in lines if line]


@pytest.mark.timeout(120)
async def test_the_approvals_example_waits_and_resumes(
    run_cli: RunCli, store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    module, commands = example()
    (tmp_path / "approvals.py").write_text(module)
    worker_line = next(c for c in commands if "worker" in c)
    worker_args = worker_line[worker_line.index("worker") :]
    rest = [c[1:] for c in commands if c[0] == "conveyor" and "worker" not in c]
    enqueue, show, signal, show_again = rest
    worker = start_worker(worker_args, database_dsn, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not await store.queue_declarations(["publisher"]):
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            await asyncio.sleep(0.1)
        made = run_cli(*enqueue)
        assert made.stdout.split() == ["1", "created"], made.stderr

        deadline = time.monotonic() + 30
        while (shown := json.loads(run_cli(*show).stdout))["state"] != "waiting":
            assert time.monotonic() < deadline, shown
            await asyncio.sleep(0.2)
        assert shown["waiting_for"] == "approval" and shown["wait_until"] is not None

        sent = run_cli(*signal)
        assert sent.returncode == 0 and "resumes" in sent.stdout, sent.stderr
        deadline = time.monotonic() + 30
        while (shown := json.loads(run_cli(*show_again).stdout))["state"] != "succeeded":
            assert time.monotonic() < deadline, shown
            await asyncio.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert shown["result"] == {
        "text": "Five reasons to love trail shoes.",
        "published": True,
        "by": "ana",
    }
