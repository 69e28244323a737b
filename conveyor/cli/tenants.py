"""``conveyor tenants``: tenants, their plan, per-role overrides and monthly usage."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.common import INT32_MAX, INT64_MAX, DatabaseUrl, out
from conveyor.cli.common import rate_text as _rate_text
from conveyor.cli.common import run as _run
from conveyor.cli.common import settings as _settings
from conveyor.cli.common import start_rate as _start_rate
from conveyor.cli.common import with_store as _with_store
from conveyor.errors import ConveyorError
from conveyor.store.params import TenantAgentUpdate, validate_tenant_id

tenants_cli = typer.Typer(help="Tenants, their plans and overrides.", no_args_is_help=True)


@tenants_cli.command("add")
def tenants_add(
    tenant_id: str,
    name: Annotated[str | None, typer.Option("--name")] = None,
    weight: Annotated[float | None, typer.Option("--weight", min=0.001)] = None,
    plan: Annotated[
        str | None, typer.Option("--plan", help="free, pro, agency, enterprise, or your own.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a tenant, or update the name, weight and plan given of an existing one."""
    try:
        validate_tenant_id(tenant_id)
    except ConveyorError as exc:
        raise typer.BadParameter(str(exc), param_hint="TENANT_ID") from None
    tenant = _run(
        _with_store(
            _settings(database_url),
            lambda store: store.create_tenant(tenant_id, name, weight, plan=plan),
        )
    )
    out.print(
        f"tenant {tenant.id} ({tenant.name}, weight {tenant.weight:g}, "
        f"plan {tenant.plan_id or 'none'})"
    )


@tenants_cli.command("list")
def tenants_list(database_url: DatabaseUrl = None) -> None:
    """List tenants."""
    tenants = _run(_with_store(_settings(database_url), lambda store: store.list_tenants()))
    for t in tenants:
        out.print(f"{t.id}\t{t.name}\tweight {t.weight:g}\tplan {t.plan_id or 'none'}")


@tenants_cli.command("agent")
def tenants_agent(
    tenant_id: str,
    role: str,
    enabled: Annotated[
        bool | None, typer.Option("--enable/--disable", help="Allow or refuse the role.")
    ] = None,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", min=1, max=INT32_MAX)
    ] = None,
    monthly_limit: Annotated[
        int | None, typer.Option("--monthly-limit", min=0, max=INT64_MAX)
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model override.")] = None,
    adapter: Annotated[str | None, typer.Option("--adapter", help="Adapter override.")] = None,
    start_rate: Annotated[
        str | None,
        typer.Option("--start-rate", help="At most COUNT starts per DURATION, e.g. 10/1m."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Override the plan for one tenant and role (flags not given keep their value)."""
    try:
        update = TenantAgentUpdate(
            tenant_id,
            role,
            enabled,
            max_concurrent,
            monthly_limit,
            model,
            adapter,
            _start_rate(start_rate),
        )
    except ConveyorError as exc:
        raise typer.BadParameter(str(exc)) from None
    agent = _run(_with_store(_settings(database_url), lambda s: s.set_tenant_agent(update)))
    out.print(
        f"{agent.tenant_id}/{agent.queue}: {'enabled' if agent.enabled else 'disabled'}, "
        f"max concurrent {agent.max_concurrent or 'plan'}, "
        f"start rate {_rate_text(agent.start_rate_limit, agent.start_rate_interval, 'plan')}, "
        f"monthly limit {agent.monthly_task_limit or 'plan'}, "
        f"model {agent.model_override or 'default'}"
    )


@tenants_cli.command("usage")
def tenants_usage(tenant_id: str, database_url: DatabaseUrl = None) -> None:
    """Tasks the tenant submitted this month, per role and in all."""
    usage = _run(_with_store(_settings(database_url), lambda s: s.tenant_usage(tenant_id)))
    if not usage:
        out.print(f"{tenant_id}: no counted tasks this month (only tenants with limits count)")
    for queue, tasks in sorted(usage.items()):
        out.print(f"{'all roles' if queue == '*' else queue}\t{tasks}")
