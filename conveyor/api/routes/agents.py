"""``/v1/agents``: declarative agents' definitions, versioned. Admin keys only.

``PUT /v1/agents/{role}`` checks the whole definition (fields, template syntax, the output
schema against its metaschema, the model against the gateway's aliases when this process
has ``CONVEYOR_LLM_CONFIG``) and stores it as the role's next version; nothing is stored
when it is refused (422 ``invalid-agent-definition``, every problem listed). The role is
declared as a queue in the same transaction. Workers serving the role take the new version
within ``CONVEYOR_AGENT_REFRESH_SECONDS``; tasks record the version they ran with.

A read of a latest version (``GET /v1/agents``, ``GET /v1/agents/{role}``) also brings this
process's copy up to date, so a version an operator has seen here is checked here at once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from conveyor.api.agent_definitions import AgentDefinitionCache
from conveyor.api.dependencies import Services, admin
from conveyor.api.problems import V1_STATUSES, Problem, problem_responses
from conveyor.client.agent_models import (
    AgentDefinitionList,
    AgentDefinitionView,
    AgentDefinitionWrite,
)
from conveyor.client.models import QUEUE_PATTERN
from conveyor.core.agent_definition import AgentDefinition
from conveyor.errors import InvalidAgentDefinition
from conveyor.store.records import StoredAgentDefinition

router = APIRouter(
    prefix="/v1/agents",
    tags=["agents"],
    dependencies=[Depends(admin)],
    responses=problem_responses(*V1_STATUSES),
)

Role = Annotated[str, Path(pattern=QUEUE_PATTERN, description="The agent's role (its queue).")]


@router.put(
    "/{role}",
    status_code=201,
    response_model=AgentDefinitionView,
    responses={200: {"model": AgentDefinitionView, "description": "Unchanged: no new version"}},
)
async def put_agent(
    role: Role, body: AgentDefinitionWrite, svc: Services, response: Response
) -> AgentDefinitionView:
    """Store a new version of the role's definition (201). The same definition as the
    latest adds no version (200, ``created`` false)."""
    try:
        definition = AgentDefinition.from_document(
            role, body.model_dump(exclude_none=True), model_check=svc.agent_model_check
        )
    except InvalidAgentDefinition as exc:
        errors = [_problem_entry(p) for p in exc.problems]
        raise Problem(422, "invalid-agent-definition", str(exc), errors=errors) from None
    stored = await svc.store.put_agent_definition(
        role, definition.document(), source="api", only_if_changed=True
    )
    if not stored.created:
        response.status_code = 200
    return agent_view(stored, definition, learn=svc.agents)


@router.get("", response_model=AgentDefinitionList)
async def list_agents(svc: Services) -> AgentDefinitionList:
    """The latest version of every declarative agent, by role."""
    found = await svc.store.latest_agent_definitions()
    return AgentDefinitionList(agents=[agent_view(s, learn=svc.agents) for s in found])


@router.get("/{role}", response_model=AgentDefinitionView)
async def get_agent(
    role: Role,
    svc: Services,
    version: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="This version (default: latest).")
    ] = None,
) -> AgentDefinitionView:
    """The role's latest definition, or the version asked for; 404 when there is none."""
    stored = await svc.store.agent_definition(role, version)
    if stored is None:
        which = "a definition" if version is None else f"a version {version}"
        raise Problem(404, "not-found", f"agent {role!r} has no {which}")
    return agent_view(stored, learn=svc.agents if version is None else None)


@router.get("/{role}/versions", response_model=AgentDefinitionList)
async def agent_versions(role: Role, svc: Services) -> AgentDefinitionList:
    """Every version of the role's definition, newest first; 404 when it has none."""
    found = await svc.store.agent_definition_history(role)
    if not found:
        raise Problem(404, "not-found", f"agent {role!r} has no definition")
    return AgentDefinitionList(agents=[agent_view(s) for s in found])


def agent_view(
    stored: StoredAgentDefinition,
    definition: AgentDefinition | None = None,
    *,
    learn: AgentDefinitionCache | None = None,
) -> AgentDefinitionView:
    """What the API shows of a stored version. ``learn``: the process's cache of latest
    definitions, told of this one (it is a latest version): once an operator has seen a
    version through this process, this process checks submits against it."""
    fields: list[str] = []
    try:
        read = definition or AgentDefinition.from_document(stored.role, stored.definition)
        fields = list(read.fields)
        if learn is not None:
            learn.learn(stored, read)
    except InvalidAgentDefinition:
        pass  # stored by another release; shown as stored
    return AgentDefinitionView(
        role=stored.role,
        version=stored.version,
        source=stored.source,
        created_at=stored.created_at,
        definition=stored.definition,
        fields=fields,
        created=stored.created,
    )


def _problem_entry(problem: str) -> dict[str, object]:
    field, _, message = problem.partition(": ")
    name = field.split(".")[0] if field and " " not in field else "body"
    return {"field": name, "location": ["body", name], "message": message or problem}
