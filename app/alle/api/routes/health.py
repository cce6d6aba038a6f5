"""Probes for Cloud Run: liveness does no I/O; readiness checks the attached resources."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from alle.api.deps import ServicesDep
from alle.logs import get_logger

router = APIRouter(tags=["health"])
log = get_logger(__name__)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
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
