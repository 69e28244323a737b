"""Helpers for running ``conveyor`` as a real process against this test's database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "conveyor.cli"]


def process_env(database_dsn: str, **extra: str) -> dict[str, str]:
    """The environment of a child process: this test's database, the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(DATABASE_URL=database_dsn, PYTHONPATH=str(ROOT), **extra)
    return env


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(database_dsn: str) -> RunCli:
    """Run ``conveyor ARGS...`` to completion; returns the completed process."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env or process_env(database_dsn, COLUMNS="200"),
            cwd=ROOT,
        )

    return run
