"""Every route of the app against every kind of wrong key, over a real API process.

The routes come from the app's own OpenAPI document, so a route added later is covered
without touching this file. For each: no key and a revoked key (tenant or admin) answer
401; a tenant key on an admin route and an admin key on a tenant route answer 403; and on
a tenant route that names an id, another tenant's id answers 404 exactly as an id that
does not exist.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conveyor.api.app import create_app
from conveyor.store.params import NewTask
from conveyor.store.postgres import PostgresStore
from tests.e2e.api_process import ADMIN_KEY, ApiProcess, bearer, issue_key, module_api
from tests.support.databases import DatabaseFactory

WRITES = {"post", "put", "patch"}


def routes() -> list[tuple[str, str]]:
    spec: dict[str, Any] = create_app(lambda: None).openapi()  # type: ignore[arg-type, return-value]
    return [(m.upper(), path) for path, ops in spec["paths"].items() for m in sorted(ops)]


ROUTES = routes()
V1 = [(m, p) for m, p in ROUTES if p.startswith("/v1/")]
# Declarative agents' definitions (/v1/agents) are an operator's, like the admin routes.
ADMIN_PREFIXES = ("/v1/admin/", "/v1/agents")
ADMIN = [(m, p) for m, p in V1 if p.startswith(ADMIN_PREFIXES)]
TENANT = [(m, p) for m, p in V1 if not p.startswith(ADMIN_PREFIXES)]
# tenant routes that name a resource of the tenant in their path
OWNED = [(m, p) for m, p in TENANT if "{" in p]


@dataclass
class World:
    """Two tenants with keys, revoked keys, and one task and group of ``acme``."""

    api: ApiProcess
    acme: str
    globex: str
    revoked_tenant: str
    revoked_admin: str
    task_id: int
    group_id: str


@pytest.fixture(scope="module")
def world(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    for api in module_api(database_factory, tmp_path_factory):
        yield asyncio.run(_populate(api))


async def _populate(api: ApiProcess) -> World:
    store = await PostgresStore.open(api.dsn, min_size=1, max_size=2)
    try:
        await store.declare_queues(["writer"])
        acme, globex = await issue_key(store, "acme"), await issue_key(store, "globex")
        revoked_tenant = await issue_key(store, "acme", create=False)
        revoked_admin = await issue_key(store, None)
        for token in (revoked_tenant, revoked_admin):
            key_id = re.match(r"cvk_([0-9a-f]{12})_", token)
            assert key_id is not None
            await store.revoke_api_key(key_id[1])
        view = store.for_tenant("acme")
        [made] = await view.enqueue_batch([NewTask("writer", {}, group_id="launch")])
        await view.create_group("launch")
        return World(api, acme, globex, revoked_tenant, revoked_admin, made.task_id, "launch")
    finally:
        await store.close()


def fill(path: str, world: World, *, missing: bool = False) -> str:
    """The path with its parameters set: the tenant's own ids, or ids nobody has."""
    values = {
        "task_id": "987654321" if missing else str(world.task_id),
        "group_id": "no-such-group" if missing else world.group_id,
        "tenant_id": "acme",
        "queue": "writer",
        "key_id": "000000000000",
        "plan_id": "free",
        "name": "approval",
        "role": "writer",
    }
    filled = re.sub(r"\{(\w+)\}", lambda m: values[m[1]], path)
    assert "{" not in filled, f"the matrix has no value for a parameter of {path}"
    return filled


def call(world: World, method: str, path: str, token: str | None) -> httpx.Response:
    headers = bearer(token) if token is not None else {}
    body: dict[str, Any] | None = {} if method.lower() in WRITES else None
    return httpx.request(method, world.api.url + path, headers=headers, json=body, timeout=30)


def test_every_route_is_in_the_matrix() -> None:
    assert ADMIN and TENANT and OWNED
    public = [p for _, p in ROUTES if not p.startswith("/v1/")]
    assert sorted(set(public)) == ["/healthz", "/readyz"]


@pytest.mark.parametrize(("method", "path"), V1, ids=[f"{m} {p}" for m, p in V1])
def test_no_key_and_revoked_keys_are_401(world: World, method: str, path: str) -> None:
    for token in (None, world.revoked_tenant, world.revoked_admin, "cvk_000000000000_nope"):
        answer = call(world, method, fill(path, world), token)
        assert answer.status_code == 401, (token, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), ADMIN, ids=[f"{m} {p}" for m, p in ADMIN])
def test_a_tenant_key_on_an_admin_route_is_403(world: World, method: str, path: str) -> None:
    answer = call(world, method, fill(path, world), world.acme)
    assert answer.status_code == 403, answer.text
    assert answer.json()["type"] == "urn:conveyor:problem:forbidden"


@pytest.mark.parametrize(("method", "path"), TENANT, ids=[f"{m} {p}" for m, p in TENANT])
def test_an_admin_key_on_a_tenant_route_is_403(world: World, method: str, path: str) -> None:
    answer = call(world, method, fill(path, world), ADMIN_KEY)
    assert answer.status_code == 403, answer.text
    assert answer.json()["type"] == "urn:conveyor:problem:forbidden"


@pytest.mark.parametrize(("method", "path"), OWNED, ids=[f"{m} {p}" for m, p in OWNED])
def test_another_tenant_s_id_is_404_like_a_missing_one(
    world: World, method: str, path: str
) -> None:
    mine = call(world, method, fill(path, world), world.acme)
    assert mine.status_code < 400, mine.text  # the owner reaches it
    other = call(world, method, fill(path, world), world.globex)
    missing = call(world, method, fill(path, world, missing=True), world.globex)
    assert other.status_code == missing.status_code == 404, (other.text, missing.text)

    def shape(answer: httpx.Response, path: str, task_id: str, group_id: str) -> dict[str, Any]:
        body: dict[str, Any] = answer.json()
        assert body.pop("instance") == path
        body["detail"] = body["detail"].replace(f" {task_id} ", " ID ")
        body["detail"] = body["detail"].replace(repr(group_id), "ID")
        return body

    assert shape(other, fill(path, world), str(world.task_id), world.group_id) == shape(
        missing, fill(path, world, missing=True), "987654321", "no-such-group"
    )


def test_no_other_tenant_changed_the_task(world: World) -> None:
    answer = call(world, "GET", f"/v1/tasks/{world.task_id}", world.acme)
    assert answer.json()["state"] in ("queued", "cancelled")
    assert call(world, "GET", "/healthz", None).status_code == 200
