"""``conveyor demo`` end to end, small: a readable run, no log lines across its output."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import RunCli, process_env


@pytest.mark.timeout(180)
def test_a_small_demo_runs_and_its_report_adds_up(run_cli: RunCli, database_dsn: str) -> None:
    env = process_env(database_dsn, COLUMNS="200")
    env.pop("OPENAI_API_KEY", None)  # the mock provider, always
    result = run_cli("demo", "--tasks", "200", "--tenants", "3", env=env)
    assert result.returncode == 0, result.stderr
    # Its staged failures (503s, bad briefs) are counted in the report, not logged one by one
    # across the live table.
    assert "task_failed" not in result.stderr and result.stderr.strip() == "", result.stderr

    report = result.stdout.split("LLM calls")[0]  # the queues' table and its sentences
    died = re.search(r"(\d+) died on a bad brief, and (\d+) were replayed", report)
    assert died is not None, report
    table_died = sum(
        int(row.split("│")[3]) for row in report.splitlines() if re.match(r"│ [a-z_]+ +│", row)
    )
    assert table_died == int(died.group(1))  # the table shows the tasks that died
    assert "still dead" in report
    assert "meant to be served faster" in report and "plan weight 8 vs 4" in report
