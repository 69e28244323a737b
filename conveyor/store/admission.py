"""Admission control at enqueue: is the tenant known, is the role allowed, is there quota.

Runs inside the enqueue transaction. Tenants with neither a plan limit nor a role limit pay
one read (the rules); tenants with limits also pay one upsert of their monthly counters,
whose row locks make concurrent submitters of one tenant take turns, so no limit can be
overshot by a race. A refused submission raises before anything is inserted, and the
transaction rolls the counters back with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from conveyor.errors import PlanViolation, QuotaExceeded, UnknownTenant
from conveyor.store.connection import Conn
from conveyor.store.params import NewTask
from conveyor.store.sql import q

TOTAL = "*"
"""The usage row that counts a tenant's tasks of every queue."""


async def check_rules(
    conn: Conn, tasks: Sequence[NewTask]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Refuse unknown tenants and roles their plan or override does not allow.

    Returns the rules per (tenant, queue), for :func:`count_accepted`.
    """
    pairs = sorted({(t.tenant_id, t.queue) for t in tasks})
    rows = await conn.fetch(q("admission_rules"), [p[0] for p in pairs], [p[1] for p in pairs])
    unknown = sorted({row["tenant_id"] for row in rows if not row["known"]})
    if unknown:
        raise UnknownTenant(unknown)
    rules = {(row["tenant_id"], row["queue"]): dict(row) for row in rows}
    for (tenant, queue), rule in rules.items():
        if rule["enabled"] is False:
            raise PlanViolation(tenant, queue, "the role is disabled for this tenant")
        allowed = rule["allowed_roles"]
        if allowed is not None and queue not in allowed and rule["enabled"] is None:
            raise PlanViolation(
                tenant,
                queue,
                f"plan {rule['plan_id']!r} allows {', '.join(allowed)} (an override enables "
                f"more: conveyor tenants agent {tenant} {queue} --enable)",
            )
    return rules


async def count_accepted(
    conn: Conn,
    rules: dict[tuple[str, str], dict[str, Any]],
    accepted: Sequence[NewTask],
    now: datetime,
) -> None:
    """Add ``accepted`` to the monthly counters of limited tenants; raise past a limit."""
    per_queue = Counter((t.tenant_id, t.queue) for t in accepted)
    limited = {
        pair: n
        for pair, n in per_queue.items()
        if rules[pair]["plan_limit"] is not None or rules[pair]["role_limit"] is not None
    }
    if not limited:
        return
    totals: Counter[str] = Counter()
    for (tenant, _queue), n in limited.items():
        totals[tenant] += n
    keys = [(tenant, TOTAL, n) for tenant, n in totals.items()]
    keys += [(tenant, queue, n) for (tenant, queue), n in limited.items()]
    month = date(now.year, now.month, 1)
    rows = await conn.fetch(
        q("count_usage"), [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], month
    )
    used = {(row["tenant_id"], row["queue"]): row["tasks"] for row in rows}
    for (tenant, queue), n in limited.items():
        rule = rules[(tenant, queue)]
        role_limit = rule["role_limit"]
        if isinstance(role_limit, int) and used[(tenant, queue)] > role_limit:
            raise QuotaExceeded(tenant, f"{queue!r}", used[(tenant, queue)] - n, n, role_limit)
        plan_limit = rule["plan_limit"]
        if isinstance(plan_limit, int) and used[(tenant, TOTAL)] > plan_limit:
            asked = totals[tenant]
            raise QuotaExceeded(tenant, "plan", used[(tenant, TOTAL)] - asked, asked, plan_limit)
