"""The web process: FastAPI app whose backing services are opened in the lifespan and closed on SIGTERM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from alle.api import client
from alle.api.access_log import AccessLogMiddleware
from alle.api.deps import Services
from alle.api.routes import auth, health, reports, tasks
from alle.cache import Cache, create_client
from alle.config import Settings
from alle.db import create_pool
from alle.jobs import create_queue
from alle.logs import get_logger
from alle.storage import Storage

log = get_logger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = create_pool(settings, name="web")
        pool.open(wait=False)
        redis_client = create_client(settings)
        queue = create_queue(settings)
        app.state.services = Services(
            settings=settings,
            pool=pool,
            cache=Cache(redis_client, settings.CACHE_TTL_SECONDS),
            storage=Storage(settings),
            queue=queue,
        )
        log.info("web started", release=settings.RELEASE, app_env=settings.APP_ENV.value)
        yield
        pool.close()
        redis_client.close()
        queue.broker.close()
        log.info("web stopped; pools closed")

    app = FastAPI(
        title="Alle",
        version=settings.RELEASE,
        description="Tasks for people who finish them.",
        lifespan=lifespan,
    )
    app.add_middleware(AccessLogMiddleware, project=settings.GOOGLE_CLOUD_PROJECT)
    for module in (health, auth, tasks, reports):
        app.include_router(module.router)
    client.install(app, settings)

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, error: psycopg.OperationalError) -> JSONResponse:
        log.error("database unavailable", path=request.url.path, error=str(error))
        return JSONResponse({"detail": "The database is unavailable; retry shortly."}, status_code=503)

    return app
