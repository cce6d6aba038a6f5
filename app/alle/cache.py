"""Redis: the shared session store and read cache. A Redis outage degrades to PostgreSQL, never to a 5xx."""

from __future__ import annotations

import json
from typing import Any

import redis

from alle.config import Settings
from alle.logs import get_logger

log = get_logger(__name__)


def create_client(settings: Settings, *, timeout: float = 0.5) -> redis.Redis:
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
    return redis.Redis.from_url(settings.REDIS_URL, **options)


class Cache:
    """JSON values with a TTL; every failure is logged and treated as a miss."""

    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self.client = client
        self.ttl = ttl_seconds

    def get(self, key: str) -> Any | None:
        try:
            raw = self.client.get(key)
        except redis.RedisError as error:
            log.warning("cache read failed; serving from the database", key=key, error=str(error))
            return None
        return None if raw is None else json.loads(raw)

    def set(self, key: str, value: Any, ttl_seconds: int | None = None) -> None:
        try:
            self.client.set(key, json.dumps(value, default=str), ex=ttl_seconds or self.ttl)
        except redis.RedisError as error:
            log.warning("cache write failed", key=key, error=str(error))

    def delete(self, *keys: str) -> None:
        """A failed invalidation is bounded by the TTL; it is logged so it can be seen."""
        try:
            self.client.delete(*keys)
        except redis.RedisError as error:
            log.warning("cache invalidation failed; entry expires with its TTL", keys=keys, error=str(error))

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False
