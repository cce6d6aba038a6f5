"""Log-in throttling per account and client address, and per client address, counted in Redis with `limits`.

Every attempt counts, right or wrong, before the password is checked: a guesser learns nothing from the
timing of a refusal. The account's limit is counted per client address too: counted per account alone, ten
wrong passwords a minute from anywhere kept its owner from logging in at all. While Redis is away (or the
process's Redis breaker is open) the counts move to this process's memory with half the allowance (at least
one), so an outage makes the limit stricter, never absent: each process then counts alone.
"""

from __future__ import annotations

import ipaddress
import math
import time

from fastapi import HTTPException, status
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from alle.cache import Breaker, redis_options
from alle.config import Settings
from alle.logs import get_logger

log = get_logger(__name__)


def address_key(address: str) -> str:
    """What the per-address limit counts: an IPv4 address, or the /64 of an IPv6 one. One subscriber usually
    holds a whole /64 (RFC 6177 suggests at least that per site), so counting single IPv6 addresses would give
    a guesser 2^64 fresh allowances."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _stricter(limit: RateLimitItem) -> RateLimitItem:
    return type(limit)(max(1, limit.amount // 2), limit.multiples, limit.namespace)


class LoginThrottle:
    """One moving-window limiter in Redis, and a stricter in-process one for when Redis cannot be reached."""

    def __init__(self, settings: Settings, breaker: Breaker) -> None:
        self._breaker = breaker
        # limits names the schemes `async+redis://`, `async+rediss://` and `async+redis+unix://`.
        url = settings.REDIS_URL.replace("unix://", "redis+unix://", 1)
        storage = RedisStorage(
            f"async+{url}",
            wrap_exceptions=True,
            implementation="redispy",
            key_prefix="login",
            **redis_options(settings, 0.5, asynchronous=True),
        )
        self._shared = MovingWindowRateLimiter(storage)
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._limits = {
            "account": parse(settings.LOGIN_ATTEMPTS_PER_ACCOUNT),
            "address": parse(settings.LOGIN_ATTEMPTS_PER_ADDRESS),
        }

    async def hit_address(self, address: str) -> None:
        """Count one attempt from this client address; 429 with `Retry-After` when it is over its limit."""
        await self._hit("address", address_key(address), "sign-ups and log-ins from this address")

    async def hit_account(self, account: str, address: str) -> None:
        """Count one attempt at this account from this client address; 429 with `Retry-After` when it is over its
        limit. `account` is the email as PostgreSQL compares it (alle.api.routes.auth.login)."""
        await self._hit("account", f"{account} {address_key(address)}", "log-ins to this account from this address")

    async def _hit(self, kind: str, identifier: str, what: str) -> None:
        limit = self._limits[kind]
        limiter: MovingWindowRateLimiter = self._local
        if self._breaker.allow():
            try:
                allowed = await self._shared.hit(limit, kind, identifier)
                limiter = self._shared
                self._breaker.succeeded()
            except StorageError as error:
                self._breaker.failed()
                log.warning("login throttle falls back to this process; Redis unreachable", error=str(error))
        if limiter is self._local:
            limit = _stricter(limit)
            allowed = await self._local.hit(limit, kind, identifier)
        if not allowed:
            try:
                reset = (await limiter.get_window_stats(limit, kind, identifier)).reset_time
            except StorageError:
                reset = time.time() + limit.get_expiry()
            retry_after = max(1, math.ceil(reset - time.time()))
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"Too many {what}; try again in {retry_after} seconds.",
                headers={"Retry-After": str(retry_after)},
            )
