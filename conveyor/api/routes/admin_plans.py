"""``/v1/admin/plans`` and ``/v1/admin/tenants/{id}/agents``: the plan matrix — what each
plan allows, and each tenant's overrides per role (enabled, caps, monthly limit, model and
adapter). Admin keys only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from conveyor.api.dependencies import Services, admin
from conveyor.api.problems import V1_STATUSES, Problem, problem_responses
from conveyor.api.routes.admin_tenants import TenantId, require_tenant
from conveyor.client.admin_models import (
    PlanList,
    PlanView,
    PlanWrite,
    StartRate,
    TenantAgents,
    TenantAgentView,
    TenantAgentWrite,
)
from conveyor.client.cap_models import CapLimits
from conveyor.client.models import QUEUE_PATTERN
from conveyor.core.llm_caps import LLMCaps
from conveyor.errors import ConfigurationError
from conveyor.store import params
from conveyor.store.records import Plan, TenantAgent

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(admin)],
    responses=problem_responses(*V1_STATUSES),
)

PlanId = Annotated[str, Path(min_length=1, max_length=64, description="The plan's id.")]
Role = Annotated[str, Path(pattern=QUEUE_PATTERN, description="The role (queue).")]


@router.get("/plans", response_model=PlanList)
async def list_plans(svc: Services) -> PlanList:
    """Every plan, smallest first."""
    return PlanList(plans=[_plan_view(p) for p in await svc.store.list_plans()])


@router.patch("/plans/{plan_id}", response_model=PlanView)
async def update_plan(plan_id: PlanId, body: PlanWrite, svc: Services) -> PlanView:
    """Change a plan; fields left out keep their value. Tenants on it follow at once."""
    update = params.PlanUpdate(
        plan_id,
        max_concurrent_per_role=body.max_concurrent_per_role,
        monthly_task_limit=body.monthly_task_limit,
        weight=body.weight,
        start_rate=_start_rate(body.start_rate),
        allowed_roles=tuple(body.allowed_roles) if body.allowed_roles is not None else None,
        monthly_token_budget=body.monthly_token_budget,
        llm_requests_per_minute=body.llm_requests_per_minute,
        llm_tokens_per_minute=body.llm_tokens_per_minute,
        monthly_spend_limit=body.monthly_spend_limit,
        run_caps=body.run_caps.caps() if body.run_caps is not None else None,
        group_caps=body.group_caps.caps() if body.group_caps is not None else None,
    )
    try:
        return _plan_view(await svc.store.update_plan(update))
    except ConfigurationError as exc:  # no such plan
        raise Problem(404, "not-found", str(exc)) from None


@router.get("/tenants/{tenant_id}/agents", response_model=TenantAgents)
async def list_tenant_agents(tenant_id: TenantId, svc: Services) -> TenantAgents:
    """A tenant's row of the plan matrix: its plan and its overrides per role."""
    tenant = await require_tenant(svc.store, tenant_id)
    agents = await svc.store.list_tenant_agents(tenant_id)
    return TenantAgents(
        tenant_id=tenant.id, plan_id=tenant.plan_id, agents=[_agent_view(a) for a in agents]
    )


@router.put("/tenants/{tenant_id}/agents/{queue}", response_model=TenantAgentView)
async def put_tenant_agent(
    tenant_id: TenantId, queue: Role, body: TenantAgentWrite, svc: Services
) -> TenantAgentView:
    """Create or change a tenant's override of one role; fields left out keep their value
    (a new override is enabled, with the plan's limits)."""
    await require_tenant(svc.store, tenant_id)
    update = params.TenantAgentUpdate(
        tenant_id,
        queue,
        enabled=body.enabled,
        max_concurrent=body.max_concurrent,
        monthly_task_limit=body.monthly_task_limit,
        model_override=body.model_override,
        adapter_override=body.adapter_override,
        start_rate=_start_rate(body.start_rate),
    )
    return _agent_view(await svc.store.set_tenant_agent(update))


def _start_rate(rate: StartRate | None) -> params.StartRate | None:
    return None if rate is None else params.StartRate(rate.limit, rate.interval_seconds)


def _rate_view(limit: int | None, interval: float | None) -> StartRate | None:
    if limit is None or interval is None:
        return None
    return StartRate(limit=limit, interval_seconds=interval)


def _plan_view(plan: Plan) -> PlanView:
    return PlanView(
        id=plan.id,
        name=plan.name,
        allowed_roles=list(plan.allowed_roles) if plan.allowed_roles is not None else None,
        max_concurrent_per_role=plan.max_concurrent_per_role,
        monthly_task_limit=plan.monthly_task_limit,
        monthly_token_budget=plan.monthly_token_budget,
        weight=plan.weight,
        start_rate=_rate_view(plan.start_rate_limit, plan.start_rate_interval),
        llm_requests_per_minute=plan.llm_requests_per_minute,
        llm_tokens_per_minute=plan.llm_tokens_per_minute,
        monthly_spend_limit=plan.monthly_spend_limit,
        run_caps=_limits(plan.run_caps),
        group_caps=_limits(plan.group_caps),
    )


def _limits(caps: LLMCaps) -> CapLimits:
    return CapLimits(calls=caps.calls, tokens=caps.tokens, cost=caps.cost)


def _agent_view(agent: TenantAgent) -> TenantAgentView:
    return TenantAgentView(
        queue=agent.queue,
        enabled=agent.enabled,
        max_concurrent=agent.max_concurrent,
        monthly_task_limit=agent.monthly_task_limit,
        model_override=agent.model_override,
        adapter_override=agent.adapter_override,
        start_rate=_rate_view(agent.start_rate_limit, agent.start_rate_interval),
    )
