"""FastAPI dependencies: the caller, bound to what it may reach."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from conveyor.api.auth import Principal
from conveyor.api.problems import Problem
from conveyor.api.request_log import note_caller
from conveyor.api.services import ApiServices, services


async def caller(
    svc: Annotated[ApiServices, Depends(services)],
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    """Whoever the request's key says; 401 without a valid key, 429 over its rate limit."""
    principal = await svc.keys.principal(authorization)
    note_caller(principal.tenant_id, principal.key_id)
    if svc.rate_limit is not None:
        await svc.rate_limit.admit(principal.key_id)
    return principal


async def tenant(principal: Annotated[Principal, Depends(caller)]) -> str:
    """The tenant a tenant key acts for; an admin key is refused on tenant routes."""
    if principal.tenant_id is None:
        raise Problem(403, "forbidden", "tenant routes take a tenant's key; this is an admin key")
    return principal.tenant_id


async def admin(principal: Annotated[Principal, Depends(caller)]) -> Principal:
    """An admin key; a tenant key is refused on admin routes."""
    if not principal.admin:
        raise Problem(403, "forbidden", "this route needs an admin key")
    return principal


Tenant = Annotated[str, Depends(tenant)]
Admin = Annotated[Principal, Depends(admin)]
Services = Annotated[ApiServices, Depends(services)]
