"""Probes: liveness does no I/O; readiness checks the attached resources.

PostgreSQL decides readiness: it holds every record, and without it nothing can be served. Without Redis the API
still serves, from PostgreSQL, and the jobs it accepts wait there until the worker's sweep enqueues them, so a
Redis outage is `degraded`, not unready: an uptime check on /readyz pages for the database, not for a cache
failover (Memorystore's have their own, milder alert).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from alle.api.deps import Services, ServicesDep
from alle.logs import get_logger

router = APIRouter(tags=["health"])
log = get_logger(__name__)


class Liveness(BaseModel):
    status: Literal["ok"]


class Checks(BaseModel):
    database: bool
    redis: bool


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable"]
    checks: Checks
    release: str


@router.get("/healthz")
async def healthz() -> Liveness:
    return Liveness(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "PostgreSQL is unreachable."}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    # Side by side: a Redis that does not answer would otherwise add its timeout to the startup probe's 1 s.
    database, redis = await asyncio.gather(_database_answers(services), _redis_answers(services))
    checks = {"database": database, "redis": redis}
    status = "unavailable" if not checks["database"] else "ready" if checks["redis"] else "degraded"
    body = {"status": status, "checks": checks, "release": services.settings.RELEASE}
    return JSONResponse(body, status_code=503 if status == "unavailable" else 200)


async def _database_answers(services: Services) -> bool:
    try:
        async with services.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness: database unreachable", error=str(error))
        return False
    return True


async def _redis_answers(services: Services) -> bool:
    return await services.cache.ping()
