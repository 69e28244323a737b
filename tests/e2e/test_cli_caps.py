"""Runaway guards from the ``conveyor`` command: a plan's caps set flag by flag and removed,
a task's caps at ``enqueue``, and a task's and group's caps and spend in ``show`` and
``group``."""

from __future__ import annotations

import json
import subprocess

from conveyor.core.llm_caps import CapScope, CapSet, CapSource, LLMCaps
from conveyor.store.params import CapReserve, CapSettle
from conveyor.store.postgres import PostgresStore
from tests.e2e.conftest import RunCli


def said(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())  # the console wraps long lines


def test_plan_caps_are_set_flag_by_flag_and_removed(run_cli: RunCli) -> None:
    first = run_cli("plans", "set", "pro", "--run-calls", "40", "--group-cost", "25")
    assert "caps per run 40 calls, per group $25.00" in said(first)
    more = run_cli("plans", "set", "pro", "--run-tokens", "200000")
    assert "caps per run 40 calls, 200,000 tokens, per group $25.00" in said(more)
    cleared = run_cli("plans", "set", "pro", "--no-run-caps", "--group-calls", "500")
    assert "caps per run none, per group 500 calls, $25.00" in said(cleared)
    assert "500 calls" in said(run_cli("plans", "list"))
    refused = run_cli("plans", "set", "pro", "--run-calls", "-1")
    assert refused.returncode != 0 and "--run-calls" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_show_and_group_print_the_caps_in_force_and_their_counts(
    run_cli: RunCli, store: PostgresStore
) -> None:
    await store.create_tenant("acme")
    await store.create_group("acme", "launch", caps=LLMCaps(tokens=10_000))
    created = run_cli(
        "enqueue", "research", "--tenant", "acme", "--cap-calls", "3", "--cap-cost", "0.5",
        "--allow-undeclared",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    task_id = int(created.stdout.split()[0])
    # What a worker's gateway does around one attempt of the task in the group.
    role = CapSet.tightest(CapScope.RUN, [(CapSource.ROLE, LLMCaps(calls=2))])
    ask = CapReserve("acme", task_id, "launch", "openai", "mock-gpt", 30, 70, role,
                     CapSet(CapScope.GROUP))  # fmt: skip
    got = await store.reserve_llm_caps(ask)
    assert got.ok
    held = (("run", str(task_id)), ("group", "launch"))
    await store.settle_llm_caps(
        CapSettle("acme", held, "openai", "mock-gpt", 100, got.estimate, 20, 10, sent=True)
    )

    shown = run_cli("show", str(task_id))
    assert shown.returncode == 0, shown.stderr
    caps = json.loads(shown.stdout)["llm_caps"]
    assert caps["caps"] == {
        "calls": {"limit": "2", "source": "role"},  # tighter than the submit's 3
        "cost": {"limit": "0.5000", "source": "submit"},
    }
    assert caps["used"]["calls"] == "1" and caps["used"]["tokens"] == "30"
    assert caps["in_flight"]["calls"] == "0"
    group = run_cli("group", "launch", "--tenant", "acme")
    assert group.returncode == 0, group.stderr
    assert '"tokens": {"limit": "10000", "source": "group"}' in group.stdout
    bad = run_cli("enqueue", "research", "--cap-cost", "-2", "--allow-undeclared")
    assert bad.returncode != 0 and "--cap-cost" in bad.stderr
