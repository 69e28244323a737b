"""The README's first minutes, as a newcomer runs them: its commands and its ten lines."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from conveyor.types import TaskState
from tests.e2e.conftest import CLI, ROOT, RunCli, process_env
from tests.e2e.test_worker_process import FAST_LEASES, wait_until_finished

README = (ROOT / "README.md").read_text("utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def test_the_readme_says_how_to_reach_the_command_make_installs() -> None:
    makefile = (ROOT / "Makefile").read_text("utf-8")
    assert "$(BIN)/conveyor demo" in makefile  # make demo runs .venv/bin/conveyor
    assert "source .venv/bin/activate" in README and ".venv/bin/conveyor" in README
    first_command = README.index("conveyor worker --app")
    assert README.index("source .venv/bin/activate") < first_command


def start_worker(args: list[str], dsn: str, folder: Path) -> subprocess.Popen[bytes]:
    """``conveyor ARGS`` started in ``folder``, as the README says: the worker imports the
    App from the current directory. Its log goes to ``folder/worker.log``."""
    with (folder / "worker.log").open("w") as log:
        return subprocess.Popen(
            [*CLI, *args, "--log-level", "WARNING"],
            env=process_env(dsn, **FAST_LEASES),
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


@pytest.mark.timeout(90)
async def test_the_ten_lines_run_every_payload_the_docs_submit(
    run_cli: RunCli, store: PostgresStore, database_dsn: str, tmp_path: Path
) -> None:
    ten_lines = blocks("python")[0]
    (tmp_path / "myagents.py").write_text(ten_lines)
    [example] = [b for b in blocks("sh") if "conveyor worker --app" in b]
    commands = [shlex.split(line.split("#")[0]) for line in example.splitlines()]
    worker_args = next(c for c in commands if c[:2] == ["conveyor", "worker"])[1:]
    enqueue_args = next(c for c in commands if c[:2] == ["conveyor", "enqueue"])[1:]

    submitted = [int(run_cli(*enqueue_args).stdout.split()[0])]  # the README's command
    for payload in ({"brief": "b1"}, {"brief": "spring launch"}):  # bulk snippet, operations.md
        submitted.append((await store.enqueue(NewTask("copywriter", payload))).task_id)
    worker = start_worker(worker_args, database_dsn, tmp_path)
    try:
        await wait_until_finished(store, submitted, timeout=45)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    log_text = (tmp_path / "worker.log").read_text()
    for task_id in submitted:
        record = await store.get_task(task_id)
        assert record.state is TaskState.SUCCEEDED, (record.last_error, log_text)
