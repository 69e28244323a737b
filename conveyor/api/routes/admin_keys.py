"""``/v1/admin/keys``: create API keys (the token is shown once), list them (never their
secrets), revoke them. Admin keys only.

A revoked key is refused by every API process within ``CONVEYOR_API_KEY_CACHE_SECONDS``
(each process caches the keys it has checked; see ``auth.py``).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from conveyor.api.dependencies import Services, admin
from conveyor.api.problems import V1_STATUSES, Problem, problem_responses
from conveyor.client.admin_models import TENANT_PATTERN, KeyCreate, KeyCreated, KeyList, KeyView
from conveyor.core.api_keys import new_key
from conveyor.store.records import ApiKey

router = APIRouter(
    prefix="/v1/admin/keys",
    tags=["admin"],
    dependencies=[Depends(admin)],
    responses=problem_responses(*V1_STATUSES),
)

KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$", description="The key's id.")]


@router.post("", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, svc: Services) -> KeyCreated:
    """Create a key for a tenant, or an admin key; the token is in this answer only."""
    if body.admin == (body.tenant_id is not None):
        raise Problem(422, "validation", "give tenant_id, or admin: true (one of them)")
    issued = new_key(secrets.token_bytes)
    key = await svc.store.create_api_key(
        issued.key_id, body.tenant_id, issued.secret_hash, body.name
    )
    return KeyCreated(**key_view(key).model_dump(), token=issued.token)


@router.get("", response_model=KeyList)
async def list_keys(
    svc: Services,
    tenant_id: Annotated[
        str | None, Query(pattern=TENANT_PATTERN, description="Only this tenant's keys.")
    ] = None,
) -> KeyList:
    """Keys by id, newest first, revoked ones included; never a secret."""
    return KeyList(keys=[key_view(k) for k in await svc.store.list_api_keys(tenant_id)])


@router.post("/{key_id}/revoke", response_model=KeyView)
async def revoke_key(key_id: KeyId, svc: Services) -> KeyView:
    """Revoke a key (again is harmless); every API process refuses it within the cache
    period."""
    revoked = await svc.store.revoke_api_key(key_id)
    if revoked is None:
        raise Problem(404, "not-found", f"key {key_id} not found")
    return key_view(revoked)


def key_view(key: ApiKey) -> KeyView:
    """A key as listed."""
    return KeyView(
        id=key.id,
        tenant_id=key.tenant_id,
        admin=key.admin,
        name=key.name,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )
