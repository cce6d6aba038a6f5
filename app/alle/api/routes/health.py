"""Probes for Cloud Run: liveness does no I/O; readiness checks the attached resources."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from alle.api.deps import ServicesDep
from alle.logs import get_logger

router = APIRouter(tags=["health"])
log = get_logger(__name__)


class Liveness(BaseModel):
    status: Literal["ok"]


class Checks(BaseModel):
    database: bool
    redis: bool


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: Checks
    release: str


@router.get("/healthz")
async def healthz() -> Liveness:
    return Liveness(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A backing service is unreachable; `checks` says which."}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    checks = {"database": False, "redis": await services.cache.ping()}
    try:
        async with services.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
        checks["database"] = True
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness: database unreachable", error=str(error))
    ready = all(checks.values())
    body = {"status": "ready" if ready else "unavailable", "checks": checks, "release": services.settings.RELEASE}
    return JSONResponse(body, status_code=200 if ready else 503)
