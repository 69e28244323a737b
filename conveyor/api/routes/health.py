"""``/healthz`` (the process answers) and ``/readyz`` (the database answers, migrated)."""

from __future__ import annotations

import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from conveyor.api.dependencies import Services
from conveyor.client.models import Health
from conveyor.errors import ConveyorError, SchemaNotReady

router = APIRouter(tags=["health"])
log = structlog.get_logger("conveyor.api")


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up. No database call: a liveness probe must not restart a healthy
    API because the database is away."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(svc: Services) -> Health | JSONResponse:
    """The database answers and its schema is current: send traffic here."""
    try:
        await svc.store.check_schema()
    except ConveyorError as exc:
        # the reason goes to the log; the answer (no key needed) names no host or port
        log.warning("not_ready", error=str(exc))
        kind = "schema not migrated" if isinstance(exc, SchemaNotReady) else "database unreachable"
        body = Health(status="unavailable", detail=kind)
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})
    return Health(status="ok")
