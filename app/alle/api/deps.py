"""Request dependencies as small typed aliases: services from app state, a pooled connection, the user."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import PoolTimeout

from alle import repository
from alle.cache import Cache
from alle.config import Settings
from alle.db import Pool
from alle.jobs import Queue
from alle.repository import Conn
from alle.security import token_digest
from alle.storage import Storage


@dataclass
class Services:
    """Built once per process in the lifespan; every request shares them."""

    settings: Settings
    pool: Pool
    cache: Cache
    storage: Storage
    queue: Queue


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_conn(services: ServicesDep) -> Iterator[Conn]:
    """One connection per request; committed when the handler returns, rolled back when it raises."""
    try:
        with services.pool.connection() as conn:
            yield conn
    except PoolTimeout as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "The database is unavailable; retry shortly."
        ) from error


ConnDep = Annotated[Conn, Depends(get_conn)]

_bearer = HTTPBearer(auto_error=False)


def session_key(digest: str) -> str:
    return f"session:{digest}"


@dataclass
class Session:
    user_id: uuid.UUID
    digest: str


def current_session(
    services: ServicesDep,
    conn: ConnDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Session:
    """Sessions are shared through Redis; PostgreSQL holds the durable record, so a Redis outage logs nobody out."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Log in first: send `Authorization: Bearer <token>` from POST /v1/auth/login.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    digest = token_digest(credentials.credentials, services.settings.SECRET_KEY)
    cached = services.cache.get(session_key(digest))
    if cached is not None:
        return Session(uuid.UUID(cached), digest)
    user_id = repository.get_session_user(conn, token_hash=digest)
    if user_id is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "The session is unknown or expired; log in again.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    services.cache.set(session_key(digest), str(user_id))
    return Session(user_id, digest)


SessionDep = Annotated[Session, Depends(current_session)]


def current_user(session: SessionDep) -> uuid.UUID:
    return session.user_id


UserDep = Annotated[uuid.UUID, Depends(current_user)]
