"""``/v1/admin/tenants``: create, change, list and read tenants, and a tenant's month of
usage. Admin keys only (the router's dependency refuses every other key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from conveyor.api.dependencies import Services, admin
from conveyor.api.problems import V1_STATUSES, Problem, problem_responses
from conveyor.api.reports import month_report, parse_month
from conveyor.client.admin_models import TENANT_PATTERN, TenantList, TenantView, TenantWrite
from conveyor.client.models import MONTH_PATTERN, UsageReport
from conveyor.errors import ConfigurationError
from conveyor.store.postgres import PostgresStore
from conveyor.store.records import Tenant

router = APIRouter(
    prefix="/v1/admin/tenants",
    tags=["admin"],
    dependencies=[Depends(admin)],
    responses=problem_responses(*V1_STATUSES),
)

TenantId = Annotated[str, Path(pattern=TENANT_PATTERN, description="The tenant's id.")]


@router.get("", response_model=TenantList)
async def list_tenants(svc: Services) -> TenantList:
    """Every tenant, by id."""
    return TenantList(tenants=[tenant_view(t) for t in await svc.store.list_tenants()])


@router.get("/{tenant_id}", response_model=TenantView)
async def get_tenant(tenant_id: TenantId, svc: Services) -> TenantView:
    """One tenant."""
    return tenant_view(await require_tenant(svc.store, tenant_id))


@router.put("/{tenant_id}", response_model=TenantView)
async def put_tenant(tenant_id: TenantId, body: TenantWrite, svc: Services) -> TenantView:
    """Create a tenant, or change the fields given of an existing one (fields left out keep
    their value; a new tenant is named by its id, weighs 1 and has no plan)."""
    try:
        tenant = await svc.store.create_tenant(tenant_id, body.name, body.weight, plan=body.plan)
    except ConfigurationError as exc:  # an unknown plan
        raise Problem(422, "unknown-plan", str(exc)) from None
    return tenant_view(tenant)


@router.get("/{tenant_id}/usage", response_model=UsageReport)
async def get_tenant_usage(
    tenant_id: TenantId,
    svc: Services,
    month: Annotated[
        str | None, Query(pattern=MONTH_PATTERN, description="YYYY-MM (UTC); default: this.")
    ] = None,
) -> UsageReport:
    """A tenant's month: tasks it created by queue and state, and its LLM usage and cost."""
    await require_tenant(svc.store, tenant_id)
    return await month_report(svc.store.for_tenant(tenant_id), parse_month(month))


async def require_tenant(store: PostgresStore, tenant_id: str) -> Tenant:
    """The tenant, or a 404 problem."""
    found = await store.get_tenant(tenant_id)
    if found is None:
        raise Problem(404, "not-found", f"tenant {tenant_id!r} not found")
    return found


def tenant_view(tenant: Tenant) -> TenantView:
    """A tenant as the admin routes show it."""
    return TenantView(
        id=tenant.id,
        name=tenant.name,
        weight=tenant.weight,
        plan_id=tenant.plan_id,
        created_at=tenant.created_at,
    )
