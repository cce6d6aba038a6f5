"""Request dependencies as small typed aliases: the process's services and the session.

Every dependency is `async def`: FastAPI runs a plain `def` dependency in its thread pool, and a request
that needs a thread while holding a connection is how the old request path stalled. No dependency checks
out a database connection for the whole request: handlers open `services.pool.connection()` around the
statements they run and leave the block before they return, so the change is committed before the
response is sent and a failed commit becomes an error response.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar, TypeVarTuple

import anyio
import anyio.to_thread
import dramatiq
from fastapi import Depends, HTTPException, Request, status
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from alle import repository
from alle.api.throttle import LoginThrottle
from alle.cache import Breaker, Cache, Lease, session_key
from alle.config import Settings
from alle.db import AsyncPool
from alle.jobs import Queue
from alle.logs import get_logger
from alle.security import TokenDigester
from alle.storage import AsyncStorage

log = get_logger(__name__)

T = TypeVar("T")
Args = TypeVarTuple("Args")


@dataclass
class Services:
    """Built once per process in the lifespan; every request shares them."""

    settings: Settings
    pool: AsyncPool
    cache: Cache
    storage: AsyncStorage
    queue: Queue
    digest: TokenDigester
    throttle: LoginThrottle
    #: Bounds the threads taken by blocking calls other than storage: password hashing, Dramatiq sends.
    blocking: anyio.CapacityLimiter
    #: Shared by the cache, the throttle and `enqueue`: after one Redis failure, Redis is left alone for a while.
    breaker: Breaker
    #: The check of every pooled connection that a failed one set off, while it runs (recheck_connections).
    recheck: asyncio.Task[None] | None = field(default=None, init=False)

    def recheck_connections(self) -> None:
        """A connection that failed in use (a Cloud SQL failover or restart) means its pool-mates are likely dead
        too, and each would fail a request of its own before the pool replaced it. Test them all now, in the
        background, one check at a time."""
        if self.recheck is None or self.recheck.done():
            self.recheck = asyncio.get_running_loop().create_task(self._recheck())

    async def _recheck(self) -> None:
        try:
            await self.pool.check()
        except Exception as error:  # noqa: BLE001 - a background task: say so, the next failure tries again
            log.warning("could not check the database connections", error=str(error))

    async def offload(self, call: Callable[[*Args], T], *args: *Args) -> T:
        """Run a blocking call in a worker thread, on purpose, under the `blocking` limiter."""
        return await anyio.to_thread.run_sync(call, *args, limiter=self.blocking)

    async def enqueue(self, actor: dramatiq.Actor[[str], None], job_id: str) -> bool:
        """Hand a job to Redis; False when Redis is unavailable, and the outbox row waits for the worker's sweep."""
        if not self.breaker.allow():
            log.warning("job left to the outbox sweep; Redis is unavailable", actor=actor.actor_name, job_id=job_id)
            return False
        try:
            await self.offload(actor.send, job_id)
        except Exception as error:  # noqa: BLE001 - the outbox row keeps the job; handlers are idempotent
            self.breaker.failed()
            log.warning(
                "could not enqueue; the outbox sweep will", actor=actor.actor_name, job_id=job_id, error=str(error)
            )
            return False
        self.breaker.succeeded()
        return True


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]

bearer = HTTPBearer(auto_error=False)
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
#: For a route that calls `bearer` itself rather than through FastAPI: the same entry in the OpenAPI document.
BEARER_SECURITY: dict[str, Any] = {"security": [{bearer.scheme_name: []}]}


@dataclass
class Session:
    user_id: uuid.UUID
    digest: str


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def _no_token() -> HTTPException:
    return _unauthorized("Log in first: send `Authorization: Bearer <token>` from POST /v1/auth/login.")


def session_gone() -> HTTPException:
    return _unauthorized("The session is unknown or expired; log in again.")


async def authenticate(
    services: Services, credentials: HTTPAuthorizationCredentials | None, *prefetch: str
) -> tuple[Session, list[bytes | None]]:
    """The session behind the bearer token, and the raw cached values of `prefetch` keys, in one Redis round trip.

    Sessions are shared through Redis; PostgreSQL holds the durable record, so a Redis outage logs nobody
    out. Only a Redis miss takes a database connection, for one statement. A cached session carries its
    expiry and is never honoured past it, whatever the Redis TTL says.
    """
    if credentials is None:
        raise _no_token()
    digest = services.digest(credentials.credentials)
    key = session_key(digest)
    cached, *prefetched = await services.cache.get_many(key, *prefetch)
    lease = services.cache.lease()
    if cached is not None:
        user_id, _, expires = cached.decode().partition("\n")
        if float(expires) > time.time():
            return Session(uuid.UUID(user_id), digest), prefetched
        raise session_gone()
    async with services.pool.connection() as conn:
        row = await repository.get_session(conn, token_hash=digest)
    if row is None:
        raise session_gone()
    await cache_session(services, digest, row["user_id"], row["expires_at"], lease)
    return Session(row["user_id"], digest), prefetched


async def cache_session(
    services: Services, digest: str, user_id: uuid.UUID, expires_at: datetime, lease: Lease | None
) -> None:
    """`<user id>\n<expiry, epoch seconds>`, kept in Redis no longer than the session lives."""
    remaining = int(expires_at.timestamp() - time.time())
    if remaining > 0:
        value = f"{user_id}\n{expires_at.timestamp()}"
        await services.cache.set_raw(session_key(digest), value, lease, min(remaining, services.cache.ttl))


async def current_session(request: Request, credentials: CredentialsDep) -> Session:
    session, _ = await authenticate(services_of(request), credentials)
    return session


SessionDep = Annotated[Session, Depends(current_session)]


@dataclass(frozen=True, slots=True)
class Caller:
    """The logged-in user and the process's services, from one dependency.

    FastAPI solves each dependency of a request anew, and that costs CPU on every request: a separate
    services dependency and user dependency cost about a fifth of a create's CPU time (measured in process),
    and solving `bearer` as a sub-dependency about 6% of its Python calls. So the routes that need both take
    this one, which reads the token itself; SessionRoute documents the scheme for them.
    """

    user_id: uuid.UUID
    services: Services


async def current_caller(request: Request) -> Caller:
    credentials = await bearer(request)
    services = services_of(request)
    session, _ = await authenticate(services, credentials)
    return Caller(session.user_id, services)


CallerDep = Annotated[Caller, Depends(current_caller)]


@dataclass(frozen=True, slots=True)
class Token:
    """The bearer token's digest and the process's services, for a handler whose statement checks the session.

    A handler whose only I/O is one PostgreSQL statement checks the session in that statement (a join on
    `sessions`), and so skips the Redis round trip `authenticate` makes: about a fifth of a create's Python calls,
    measured in process. Such a handler also never relies on a cached session. The token is then checked after
    the request's parameters and body: a bad token with a bad body gets 422, not 401.
    """

    digest: str
    services: Services


async def current_token(request: Request) -> Token:
    credentials = await bearer(request)
    if credentials is None:
        raise _no_token()
    services = services_of(request)
    return Token(services.digest(credentials.credentials), services)


TokenDep = Annotated[Token, Depends(current_token)]


class SessionRoute(APIRoute):
    """A route that documents the bearer scheme when its endpoint reads the token itself (CallerDep, TokenDep)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        if any(dependency.call in (current_caller, current_token) for dependency in self.dependant.dependencies):
            self.openapi_extra = {**BEARER_SECURITY, **(self.openapi_extra or {})}
