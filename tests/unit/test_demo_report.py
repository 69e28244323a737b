"""The demo's closing report says what happened, including what the final states hide."""

from __future__ import annotations

from collections import Counter

from rich.console import Console

from conveyor.demo.report import Outcome, fairness_lines, print_queues
from conveyor.store.records import Plan, QueueSummary, TenantWaits


def plan(plan_id: str, weight: float, cap: int | None) -> Plan:
    return Plan(plan_id, plan_id.title(), None, cap, None, None, weight)


def test_tasks_that_died_and_were_replayed_show_although_none_is_dead_at_the_end() -> None:
    console = Console(record=True, width=200)
    summary = [
        QueueSummary("seo", 495, 0, 0, 17, 2.3, 6.9, 0.37),
        QueueSummary("social", 373, 1, 0, 16, 2.5, 5.7, 0.34),
    ]
    outcome = Outcome(
        submitted=860, seconds=7.0, retried=33, died=Counter(seo=7, social=4), replayed=11,
        redelivered=5,
    )  # fmt: skip
    print_queues(console, summary, outcome)
    text = console.export_text()
    assert "died, replayed" in text and "still dead" in text
    seo_row = next(line for line in text.splitlines() if line.startswith("│ seo"))
    assert [cell.strip() for cell in seo_row.split("│")[1:5]] == ["seo", "495", "7", "0"]
    assert "11 died on a bad brief, and 11 were replayed" in text
    assert "(1 still dead)" in text


def test_the_fairness_line_says_the_flooding_tenant_was_entitled_to_more() -> None:
    waits = [
        TenantWaits("enterprise-0", 750, 3.2, 6.0),
        TenantWaits("agency-0", 120, 3.5, 6.8),
        TenantWaits("agency-1", 110, 3.6, 6.5),
    ]
    [line] = fairness_lines(
        "enterprise-0", plan("enterprise", 8, None), 40, plan("agency", 4, 4), waits
    )
    assert "twice an agency's share (plan weight 8 vs 4)" in line
    assert "10 times its cap (40 running per role vs 4)" in line
    assert "meant to be served faster" in line
    assert "waited p50 3,200 ms" in line and "The other 2 tenants" in line


def test_no_fairness_line_without_both_sides() -> None:
    only = [TenantWaits("agency-0", 10, 1.0, 2.0)]
    assert fairness_lines("enterprise-0", plan("e", 8, None), 40, plan("a", 4, 4), only) == []
