"""The Grafana dashboard and the alert rules query only metrics the code exports (so neither
can rot when a metric is renamed), every alert has a one-line runbook, promtool accepts the
rules, and docs/metrics.md lists exactly the metrics there are."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.observability.catalog import metric_families, series_names
from tests.support.prometheus import binary

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "conveyor.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"
METRIC_NAME = re.compile(r"\bconveyor_[a-z0-9_]+\b")


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every object inside a JSON document."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def dashboard_expressions() -> list[str]:
    model = json.loads(DASHBOARD.read_text("utf-8"))
    found = [node["expr"] for node in walk(model) if isinstance(node.get("expr"), str)]
    found += [
        node["query"]["query"]
        for node in walk(model.get("templating", {}))
        if isinstance(node.get("query"), dict)
    ]
    return found


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text("utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_dashboard_is_a_grafana_model_with_panels_for_every_part() -> None:
    model = json.loads(DASHBOARD.read_text("utf-8"))
    assert model["uid"] == "conveyor" and model["schemaVersion"] >= 36
    panels = model["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
    rows = {p["title"] for p in panels if p["type"] == "row"}
    assert rows == {"Tasks", "Workers", "LLM", "Database pool", "API"}
    queried = " ".join(dashboard_expressions())
    for needed in (
        "conveyor_tasks_total",
        "conveyor_queue_depth",
        "conveyor_queue_oldest_age_seconds",
        "conveyor_task_queue_wait_seconds_bucket",
        "conveyor_task_duration_seconds_bucket",
        "conveyor_llm_tokens_total",
        "conveyor_llm_rate_limited_total",
        "conveyor_llm_breaker_state",
        "conveyor_db_pool_acquire_seconds_bucket",
        "conveyor_http_requests_total",
        "conveyor_http_request_duration_seconds_bucket",
    ):
        assert needed in queried, needed


def test_every_metric_the_dashboard_queries_exists() -> None:
    exported = series_names()
    queried = {name for expr in dashboard_expressions() for name in METRIC_NAME.findall(expr)}
    assert queried, "the dashboard queries no conveyor metric"
    assert queried - exported == set()


def test_every_alert_queries_existing_metrics_and_has_a_one_line_runbook() -> None:
    exported = series_names()
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    for seeded in (  # what the design names: depth and age, errors, breakers, budgets
        "ConveyorQueueBacklog",
        "ConveyorQueueOldestTaskAge",
        "ConveyorTaskErrorRate",
        "ConveyorLLMBreakerOpen",
        "ConveyorLLMBudgetExhausted",
    ):
        assert seeded in names
    for rule in rules:
        used = set(METRIC_NAME.findall(rule["expr"]))
        assert used and used - exported == set(), rule["alert"]
        runbook = rule["annotations"]["runbook"]
        assert runbook.strip() and "\n" not in runbook.strip(), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = binary("promtool")  # skips, saying why, only where it cannot be installed
    done = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_docs_list_exactly_the_metrics_there_are() -> None:
    table = {
        match
        for line in METRICS_DOC.read_text("utf-8").splitlines()
        if line.startswith("| `conveyor_")
        for match in re.findall(r"^\| `(conveyor_[a-z0-9_]+)`", line)
    }
    exported = {
        name + ("_total" if kind == "counter" else "") for name, kind in metric_families().items()
    }
    assert table == exported


@pytest.mark.parametrize("path", [DASHBOARD, ALERTS])
def test_the_deploy_files_name_no_metric_twice_by_another_name(path: Path) -> None:
    # a counter queried without _total would match nothing in Prometheus
    families = metric_families()
    text = path.read_text("utf-8")
    for name in METRIC_NAME.findall(text):
        if families.get(name) == "counter":
            pytest.fail(f"{path.name} queries counter {name} without _total")
