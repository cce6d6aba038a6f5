"""Redis: the shared session store and read cache. A Redis outage degrades to PostgreSQL, never to a 5xx.

The web process talks to Redis with `redis.asyncio` on its event loop (`create_async_client`, `Cache`);
Dramatiq's broker needs the blocking client (`create_client`). Both get the same timeouts and TLS settings.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis
import redis.asyncio

from alle.config import Settings
from alle.logs import get_logger

log = get_logger(__name__)


def task_key(task_id: uuid.UUID) -> str:
    """Keyed by task alone, so a session and a task come back from one MGET; the cached value names the owner."""
    return f"task:{task_id}"


def session_key(digest: str) -> str:
    """The cache key of a session, by the keyed digest of its token."""
    return f"session:{digest}"


def _options(settings: Settings, timeout: float) -> dict[str, Any]:
    """Short timeouts: a cache that hangs is worse than a cache miss."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
    }
    if settings.REDIS_URL.startswith("rediss://") and settings.REDIS_CA_CERT:
        # Memorystore's in-transit encryption: trust only the instance's own CAs. They are unique to the
        # instance, so verifying the chain pins the server; it is reached by private IP, not a hostname.
        options["ssl_ca_data"] = settings.REDIS_CA_CERT
        options["ssl_check_hostname"] = False
    return options


def create_client(settings: Settings, *, timeout: float = 0.5) -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, **_options(settings, timeout))


def create_async_client(settings: Settings, *, timeout: float = 0.5) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(settings.REDIS_URL, **_options(settings, timeout))


class Cache:
    """Values with a TTL; every failure is logged and treated as a miss, so callers fall back to PostgreSQL."""

    def __init__(self, client: redis.asyncio.Redis, ttl_seconds: int) -> None:
        self.client = client
        self.ttl = ttl_seconds

    async def get_many(self, *keys: str) -> list[bytes | None]:
        """Raw values of several keys in one round trip (MGET); all misses when Redis fails."""
        try:
            values: list[bytes | None] = await self.client.mget(keys)  # type: ignore[assignment] # bytes: no decoding
        except redis.RedisError as error:
            log.warning("cache read failed; serving from the database", keys=keys, error=str(error))
            return [None] * len(keys)
        return values

    async def get(self, key: str) -> Any | None:
        (raw,) = await self.get_many(key)
        return None if raw is None else json.loads(raw)

    async def set_raw(self, key: str, value: bytes | str, ttl_seconds: int | None = None) -> None:
        try:
            await self.client.set(key, value, ex=ttl_seconds or self.ttl)
        except redis.RedisError as error:
            log.warning("cache write failed", key=key, error=str(error))

    async def set(self, key: str, value: Any, ttl_seconds: int | None = None) -> None:
        await self.set_raw(key, json.dumps(value, default=str), ttl_seconds)

    async def delete(self, *keys: str) -> None:
        """A failed invalidation is bounded by the TTL; it is logged so it can be seen."""
        try:
            await self.client.delete(*keys)
        except redis.RedisError as error:
            log.warning("cache invalidation failed; entry expires with its TTL", keys=keys, error=str(error))

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except redis.RedisError:
            return False
