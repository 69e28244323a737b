"""``/v1/usage``: the caller's tenant's month — tasks it created by queue and state, and its
LLM calls, tokens and cost. Read through ``store.for_tenant(tenant)`` only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from conveyor.api.dependencies import Services, Tenant
from conveyor.api.problems import V1_STATUSES, problem_responses
from conveyor.api.reports import month_report, parse_month
from conveyor.client.models import MONTH_PATTERN, UsageReport

router = APIRouter(
    prefix="/v1/usage",
    tags=["usage"],
    responses=problem_responses(*V1_STATUSES),
)

Month = Annotated[
    str | None, Query(pattern=MONTH_PATTERN, description="YYYY-MM (UTC); default: this month.")
]


@router.get("", response_model=UsageReport)
async def get_usage(svc: Services, tenant: Tenant, month: Month = None) -> UsageReport:
    """The tenant's tasks created in the month, and its LLM usage and cost in it."""
    return await month_report(svc.store.for_tenant(tenant), parse_month(month))
