"""Redis: the shared session store and read cache. A Redis outage degrades to PostgreSQL, never to a 5xx.

Revocation and writes hold across an outage through a cache epoch kept in PostgreSQL (table `cache_epoch`,
see app/README.md "Sessions and caches"). Every cached value is stamped with the epoch it was written under,
and a value from another epoch is a miss. When an invalidation cannot reach Redis, the epoch is bumped in
PostgreSQL before the client is answered, so whatever Redis still holds is dead when it comes back. A process
re-reads the epoch from PostgreSQL whenever it opens a new Redis connection or a Redis call fails, so a process
that was idle during the outage does not trust the old epoch either.

The web process talks to Redis with `redis.asyncio` on its event loop (`create_async_client`, `Cache`);
Dramatiq's broker needs the blocking client (`create_client`). Both get the same timeouts, retries and TLS settings.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import NoBackoff

from alle import repository
from alle.config import Settings
from alle.db import AsyncPool, Pool
from alle.logs import get_logger

log = get_logger(__name__)

#: Logged when the epoch, which PostgreSQL holds, could not be read: a database trouble, not a Redis one, which the
#: Redis alert leaves out (components/monitoring.py).
EPOCH_UNREADABLE = "could not read the cache epoch; bypassing the cache"

P = TypeVar("P", redis.client.Pipeline, redis.asyncio.client.Pipeline)


def task_key(task_id: uuid.UUID) -> str:
    """Keyed by task alone, so a session and a task come back from one MGET; the cached value names the owner."""
    return f"task:{task_id}"


def session_key(digest: str) -> str:
    """The cache key of a session, by the keyed digest of its token."""
    return f"session:{digest}"


def redis_options(settings: Settings, timeout: float, *, asynchronous: bool) -> dict[str, Any]:
    """Short timeouts, never retried: a cache that hangs is worse than a cache miss.

    `retry` is explicit because redis-py's default depends on how a client is built: `Redis(...)` retries ten
    times with backoff (redis-py 8.1), `Redis.from_url(...)` not at all. No retries: a Redis that hangs costs a
    call one timeout, and the caller treats the failure as a miss, bumps the cache epoch, or leaves a job to the
    outbox sweep. A connection that Redis closed (a restart) needs no retry either: the pool checks each
    connection before lending it and reconnects one the server has closed. `asynchronous` picks the Retry class
    of `redis.asyncio` (its `call_with_retry` is a coroutine) rather than the blocking client's.
    """
    retry = redis.asyncio.retry.Retry(NoBackoff(), 0) if asynchronous else redis.retry.Retry(NoBackoff(), 0)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
        "retry": retry,
        # No CLIENT SETINFO on connect: it costs two commands and an importlib.metadata lookup (about 1 ms of CPU)
        # for every new connection, on the event loop, exactly when a burst of requests grows the pool.
        "driver_info": None,
    }
    if settings.REDIS_URL.startswith("rediss://") and settings.REDIS_CA_CERT:
        # Memorystore's in-transit encryption: trust only the instance's own CAs. They are unique to the
        # instance, so verifying the chain pins the server; it is reached by private IP, not a hostname.
        options["ssl_ca_data"] = settings.REDIS_CA_CERT
        options["ssl_check_hostname"] = False
    return options


def create_client(settings: Settings, *, timeout: float = 0.5) -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, **redis_options(settings, timeout, asynchronous=False))


def create_async_client(settings: Settings, *, timeout: float = 0.5) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(settings.REDIS_URL, **redis_options(settings, timeout, asynchronous=True))


def invalidate(client: redis.Redis, pool: Pool, keys: list[str]) -> None:
    """`Cache.delete` for the blocking processes (admin jobs): called after the commit that changed the rows.

    Replaces the keys with tombstones; if Redis cannot be reached, bumps the cache epoch in PostgreSQL instead, so
    whatever Redis still holds is dead when it comes back. If PostgreSQL fails too, the error propagates.
    """
    try:
        _tombstones(client.pipeline(transaction=False), keys).execute()
        return
    except redis.RedisError as error:
        log.warning("cache invalidation failed; bumping the cache epoch", keys=len(keys), error=str(error))
    with pool.connection() as conn:
        repository.bump_cache_epoch_blocking(conn)


_STAMP = b"\x1f"  # between the epoch and the value
#: What an invalidation leaves in place of a value: no epoch, so every read misses it, and no fill overwrites it.
_TOMBSTONE = b"\x1ftombstone"
#: How long a tombstone stays. A fill is refused when more than half of this has passed since its lease, so a
#: value read from PostgreSQL before a write can never be cached after that write's invalidation.
TOMBSTONE_SECONDS = 30
#: How often a process re-reads the epoch even when its own Redis calls succeed: another process that could not
#: reach Redis bumped it in PostgreSQL, and values stamped with the old one must stop counting here too.
EPOCH_RECHECK_SECONDS = 1.0
#: Set the value unless an invalidation left a tombstone there since the reader's lease was taken.
_FILL = """
if redis.call('GET', KEYS[1]) == ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


def _tombstones(pipeline: P, keys: list[str] | tuple[str, ...]) -> P:
    """One round trip that replaces each key's value with a tombstone, for the blocking or the asyncio client."""
    for key in keys:
        pipeline.set(key, _TOMBSTONE, ex=TOMBSTONE_SECONDS)
    return pipeline


@dataclass(frozen=True, slots=True)
class Lease:
    """Taken before the PostgreSQL read whose result is to be cached: the epoch then, and when."""

    epoch: int
    taken: float


#: Reads of the epoch in a row that may each be overtaken by a new Redis connection before the cache is bypassed.
EPOCH_READS = 10


class Breaker:
    """After a Redis call fails, the process leaves Redis alone for `pause` seconds: calls are skipped, not tried.

    Without it a Redis that hangs costs every call one timeout, and a request makes up to three (session read,
    invalidation, enqueue). With it a request pays at most the one timeout that tripped the breaker, and the
    requests after it none. Once the pause is over, one call probes Redis while the others keep away; its success
    closes the breaker, its failure starts another pause. Shared by the web process's cache, enqueues and log-in
    throttle (one Redis); its state is two attributes, so the event loop and offloaded threads may share it.
    """

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self._until = 0.0
        self._tripped = False

    def allow(self) -> bool:
        """Whether a call may go to Redis now; the first call after a pause becomes the probe."""
        now = time.monotonic()
        if now < self._until:
            return False
        if self._tripped:
            self._until = now + self.pause
        return True

    def failed(self) -> None:
        self._tripped = True
        self._until = time.monotonic() + self.pause

    def succeeded(self) -> None:
        self._tripped = False
        self._until = 0.0


class Cache:
    """Values with a TTL, stamped with the cache epoch; every failure is logged and treated as a miss.

    `epoch` is None while it is unknown (at start, after a Redis failure, after a new Redis connection): then
    reads go to PostgreSQL until the epoch is read again, and nothing is cached. While the breaker is open, Redis
    is not called at all: reads miss, nothing is cached, and invalidations bump the epoch. One read of the epoch
    at a time, shared by every request that needs it: a burst of new Redis connections (the pool growing under
    load) would otherwise send every request in flight to PostgreSQL at once, for the epoch and then for the
    data, and the requests queued for the pool's connections took seconds.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        ttl_seconds: int,
        pool: AsyncPool,
        breaker: Breaker,
        *,
        recheck_seconds: float = EPOCH_RECHECK_SECONDS,
    ) -> None:
        self.client = client
        self.recheck = recheck_seconds
        self.ttl = ttl_seconds
        self.pool = pool
        self.breaker = breaker
        self.epoch: int | None = None
        self._forgotten = 0  # how often the epoch was made unknown: a read overtaken by that is not trusted
        self._reading: asyncio.Future[None] | None = None
        self._epoch_read_at = 0.0
        self._fill = client.register_script(_FILL)
        # Every new connection (first use, or after Redis came back) makes the epoch unknown again.
        client.connection_pool.connection_kwargs["redis_connect_func"] = self._on_connect

    async def _on_connect(self, connection: redis.asyncio.connection.AbstractConnection) -> None:
        await connection.on_connect()
        self._forget_epoch()

    def _forget_epoch(self) -> None:
        self.epoch = None
        self._forgotten += 1

    async def _known_epoch(self) -> int | None:
        """The epoch, read if unknown. A known one due for its periodic re-read is refreshed in the background:
        requests keep using it meanwhile, so a saturated database pool never holds up a cache hit."""
        due = time.monotonic() - self._epoch_read_at > self.recheck
        if (self.epoch is None or due) and self._reading is None:
            self._reading = asyncio.ensure_future(self._read_epoch())
        if self.epoch is None and self._reading is not None:
            # Shielded: a request cancelled while it waits must not cancel the read the others wait for.
            await asyncio.shield(self._reading)
        return self.epoch

    async def _read_epoch(self) -> None:
        """Set the epoch from PostgreSQL, unless a new Redis connection or a failure came during the read."""
        try:
            for _ in range(EPOCH_READS):
                async with self.pool.connection() as conn:
                    forgotten = self._forgotten
                    epoch = await repository.get_cache_epoch(conn)
                if forgotten == self._forgotten:
                    self.epoch = epoch
                    return
        except Exception as error:  # noqa: BLE001 - without the epoch the cache is bypassed, not trusted
            log.warning(EPOCH_UNREADABLE, error=str(error))
        finally:
            # Also after a failure: a PostgreSQL outage must not make every request wait for a read of its own.
            self._epoch_read_at = time.monotonic()
            self._reading = None

    async def get_many(self, *keys: str) -> list[bytes | None]:
        """Raw values of several keys in one round trip (MGET); misses when Redis fails or the epoch is not theirs."""
        misses: list[bytes | None] = [None] * len(keys)
        if not self.breaker.allow():
            return misses
        epoch = await self._known_epoch()
        if epoch is None:
            return misses
        try:
            values: list[bytes | None] = await self.client.mget(keys)  # type: ignore[assignment] # bytes: no decoding
        except redis.RedisError as error:
            self._failed()
            log.warning("cache read failed; serving from the database", keys=keys, error=str(error))
            return misses
        self.breaker.succeeded()
        if self.epoch != epoch:
            # A new connection came during the call, so Redis may have restarted with values that predate an
            # outage: they count only if stamped with the epoch as PostgreSQL has it now. Waiting for that one
            # shared read is far cheaper than a miss: a burst of new connections made every request in flight
            # a miss, and their database reads queued for the pool for over a second.
            epoch = await self._known_epoch()
            if epoch is None:
                return misses
        stamp = str(epoch).encode() + _STAMP
        return [v[len(stamp) :] if v is not None and v.startswith(stamp) else None for v in values]

    def lease(self) -> Lease | None:
        """Take before reading from PostgreSQL what `set_raw` will cache; None: the epoch is unknown, cache nothing."""
        return None if self.epoch is None else Lease(self.epoch, time.monotonic())

    async def set_raw(self, key: str, value: bytes | str, lease: Lease | None, ttl_seconds: int | None = None) -> None:
        """Cache a value that PostgreSQL confirmed after `lease` was taken.

        Not cached if the epoch changed since the lease (a write bumped it: the value may predate that write), if
        an invalidation left a tombstone on the key, or if the lease is too old for the tombstone to still be there.
        Without these a read that raced a write cached the value from before it, for the whole TTL.
        """
        if (
            lease is None
            or lease.epoch != self.epoch
            or time.monotonic() - lease.taken > TOMBSTONE_SECONDS / 2
            or not self.breaker.allow()
        ):
            return
        raw = value.encode() if isinstance(value, str) else value
        stamped = str(lease.epoch).encode() + _STAMP + raw
        try:
            await self._fill(keys=[key], args=[stamped, ttl_seconds or self.ttl, _TOMBSTONE])
        except redis.RedisError as error:
            self._failed()
            log.warning("cache write failed", key=key, error=str(error))
            return
        self.breaker.succeeded()

    async def delete(self, *keys: str) -> None:
        """Invalidate after a committed write: a tombstone replaces each value, so a read that began before the
        write cannot cache its older copy afterwards (`set_raw`). If Redis cannot be reached, bump the epoch in
        PostgreSQL instead; other processes see the bump within EPOCH_RECHECK_SECONDS.

        The bump is awaited before the client is answered; if PostgreSQL fails too, the error propagates, so the
        client is never told of a write that the cache might still hide.
        """
        if self.breaker.allow():
            try:
                await _tombstones(self.client.pipeline(transaction=False), keys).execute()
            except redis.RedisError as error:
                self._failed()
                log.warning("cache invalidation failed; bumping the cache epoch", keys=keys, error=str(error))
            else:
                self.breaker.succeeded()
                return
        async with self.pool.connection() as conn:
            self.epoch = await repository.bump_cache_epoch(conn)

    def _failed(self) -> None:
        self._forget_epoch()
        self.breaker.failed()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except redis.RedisError:
            return False
