"""The web process: FastAPI app whose backing services are opened in the lifespan and closed on SIGTERM."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import psycopg
from fastapi import FastAPI, Request, routing
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.types import ASGIApp

from alle.api import client, errors
from alle.api.access_log import AccessLogMiddleware
from alle.api.deps import Services
from alle.api.errors import BodyLimit
from alle.api.forwarded import ForwardedClient
from alle.api.limits import InFlightLimit, InstanceLoad
from alle.api.routes import auth, health, reports, tasks
from alle.api.throttle import LoginThrottle
from alle.cache import Breaker, Cache, create_async_client
from alle.config import AppEnv, Settings
from alle.db import create_async_pool
from alle.jobs import ENQUEUE_TIMEOUT_SECONDS, create_queue
from alle.logs import get_logger
from alle.security import TokenDigester, configure_password_hashing
from alle.storage import AsyncStorage, Storage

log = get_logger(__name__)

#: FastAPI's reader of an endpoint's source location, cached per endpoint. Private, so looked up: a patch release
#: that drops it leaves each endpoint to read its source on its first call, as FastAPI does, instead of stopping
#: every web process at start.
read_endpoint_location = getattr(routing, "_extract_endpoint_context", None)

#: Threads for blocking calls: bucket transfers, and password hashing with Dramatiq sends. Argon2 is CPU-bound,
#: so more threads than cores only queue; transfers mostly wait on the network.
STORAGE_THREADS = 16
BLOCKING_THREADS = 4
#: The cyclic collector's thresholds while serving. A request's objects are freed by reference counting, but with
#: dozens of requests in flight the count of live allocations crosses CPython's default 700 hundreds of times a
#: second, and each pass walks every request's objects: about 0.1 ms of CPU per request, measured in process.
GC_THRESHOLDS = (10_000, 10, 10)
#: Where the OpenAPI UIs are served.
LOCAL_ENVS = (AppEnv.development, AppEnv.test)


class Bounded(FastAPI):
    """FastAPI with the in-flight bound outside all of its middleware, even its error handling.

    Overload is when CPU is scarce, and a refusal should cost it least: a 503 from here runs no FastAPI
    code, and costs no access-log line (the limiter counts refusals).
    """

    def __init__(self, *, limit: int, processes: int, **options: Any) -> None:
        super().__init__(**options)
        self.limit = limit
        #: With several processes (forked after this is built), what each has in flight, for all to see.
        self.instance = InstanceLoad(processes) if processes > 1 else None

    def build_middleware_stack(self) -> ASGIApp:
        return InFlightLimit(super().build_middleware_stack(), limit=self.limit, instance=self.instance)


def create_app(settings: Settings) -> Bounded:
    configure_password_hashing(settings.PASSWORD_HASH_MEMORY_KIB)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = create_async_pool(settings)
        await pool.open(wait=False)
        redis_client = create_async_client(settings)
        queue = create_queue(settings, timeout=ENQUEUE_TIMEOUT_SECONDS)
        breaker = Breaker(settings.REDIS_BREAKER_SECONDS)
        app.state.services = Services(
            settings=settings,
            pool=pool,
            cache=Cache(redis_client, settings.CACHE_TTL_SECONDS, pool, breaker),
            storage=AsyncStorage(Storage(settings), limit=STORAGE_THREADS),
            queue=queue,
            digest=TokenDigester(settings.SECRET_KEY),
            throttle=LoginThrottle(settings, breaker),
            blocking=anyio.CapacityLimiter(BLOCKING_THREADS),
            breaker=breaker,
        )
        settle_heap()
        log.info(
            "web started",
            release=settings.RELEASE,
            app_env=settings.APP_ENV.value,
            pool_size=settings.DATABASE_POOL_SIZE,
            max_requests_in_flight=settings.MAX_REQUESTS_IN_FLIGHT,
        )
        yield
        if app.state.services.recheck is not None:
            app.state.services.recheck.cancel()
        await pool.close()
        await redis_client.aclose()
        queue.broker.close()
        log.info("web stopped; pools closed")

    app = Bounded(
        limit=settings.MAX_REQUESTS_IN_FLIGHT,
        processes=settings.WEB_CONCURRENCY,
        title="Alle",
        version=settings.RELEASE,
        description="Tasks for people who finish them.",
        lifespan=lifespan,
        # FastAPI's OpenTelemetry hooks look up the global providers on every request; this app exports none.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # The OpenAPI UIs run scripts from a CDN, of a floating version and without integrity hashes, on the app's
        # own origin, where the browser client keeps its token: for local use only. /openapi.json stays.
        docs_url="/docs" if settings.APP_ENV in LOCAL_ENVS else None,
        redoc_url="/redoc" if settings.APP_ENV in LOCAL_ENVS else None,
    )
    # The middleware added last runs first. An oversize body is refused inside the access log, so it is logged.
    app.add_middleware(BodyLimit)
    app.add_middleware(AccessLogMiddleware, project=settings.GOOGLE_CLOUD_PROJECT)
    # Outermost middleware: every layer, the access log and the log-in limiter included, sees the client our front
    # ends saw (the in-flight bound around them all reads no address).
    app.add_middleware(ForwardedClient, hops=settings.TRUSTED_PROXY_HOPS)
    # Routes are matched in order, router by router: the busiest first.
    for module in (tasks, auth, reports, health):
        app.include_router(module.router)
    client.install(app, settings)
    errors.install(app)

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, error: psycopg.OperationalError) -> JSONResponse:
        """Also the pool's PoolTimeout (no connection came free in time) and a statement cancelled at its timeout."""
        log.error("database unavailable", path=request.url.path, error=str(error))
        if not isinstance(error, PoolTimeout) and _lost_connection(error):
            request.app.state.services.recheck_connections()
        return JSONResponse(
            {"detail": "The database is unavailable; retry shortly."}, status_code=503, headers={"Retry-After": "1"}
        )

    build_routes(app)
    return app


def build_routes(app: FastAPI) -> None:
    """Build now what FastAPI otherwise builds on the first request each router matches: every route's
    validators and dependency graph, about 60 ms of CPU (one pydantic TypeAdapter per parameter and response).
    Also each endpoint's source location for error messages, which it reads on the endpoint's first call by
    tokenizing the source, after compiling tokenize's patterns: 15 ms for the first endpoint in a process.

    Built here, it is part of start-up: done once before gunicorn forks, shared by the processes, and frozen with
    the rest of the heap, instead of added to the first requests in each process, the startup probe's among them.
    """
    for route in routing.iter_route_contexts(app.routes):
        if route.endpoint is not None and read_endpoint_location is not None:
            read_endpoint_location(route.endpoint)


def _lost_connection(error: psycopg.OperationalError) -> bool:
    """No SQLSTATE (the connection broke), class 08 (connection exception), or the server shut down (57P01-03)."""
    state = error.sqlstate
    return state is None or state.startswith("08") or state in {"57P01", "57P02", "57P03"}


def settle_heap() -> None:
    """Once the app is built: what exists now (modules, the app, its pools) lives as long as the process.

    Frozen, it is left out of every later collection. Otherwise each full collection walks it all, about 0.2 s
    during which no request is served, every thousand or so requests (measured in process). Then collections
    run at GC_THRESHOLDS.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
