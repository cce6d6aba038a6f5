"""Hot reads come from Redis and are invalidated on write; without Redis the API keeps serving from PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

import backing
from alle import repository
from alle.cache import Cache, create_async_client
from alle.config import Settings
from alle.db import create_async_pool
from conftest import Spawn, signup_and_login


def _cached_task(services: backing.Backing, task_id: str) -> dict[str, object] | None:
    """The cached value is `<epoch>\x1f<owner id>\n<task JSON>` (alle.cache, alle.api.routes.tasks.cache_value)."""
    raw = services.redis.get(f"task:{task_id}")
    if raw is None:
        return None
    owner, _, body = raw.partition(b"\x1f")[2].partition(b"\n")
    cached: dict[str, object] = {"owner": owner.decode(), **json.loads(body)}
    return cached


def test_task_read_is_cached_in_redis_and_invalidated_on_write(spawn: Spawn, services: backing.Backing) -> None:
    web = spawn("web")
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "cached"}, headers=auth).json()
    me = httpx.get(f"{web.url}/v1/users/me", headers=auth).json()
    httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth)
    cached = _cached_task(services, task["id"])
    assert cached is not None
    assert (cached["owner"], cached["title"]) == (me["id"], "cached")
    httpx.patch(f"{web.url}/v1/tasks/{task['id']}", json={"title": "fresh"}, headers=auth)
    assert _cached_task(services, task["id"]) is None
    assert httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth).json()["title"] == "fresh"


def test_cached_read_does_not_hit_the_database(spawn: Spawn, services: backing.Backing) -> None:
    web = spawn("web")
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "original"}, headers=auth).json()
    httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth)
    key = f"task:{task['id']}"
    owner, _, _ = services.redis.get(key).partition(b"\n")
    services.redis.set(key, owner + b"\n" + json.dumps({**task, "title": "from redis"}).encode())
    assert httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth).json()["title"] == "from redis"


def test_a_cached_task_is_served_only_to_its_owner(spawn: Spawn, services: backing.Backing) -> None:
    web = spawn("web")
    alice, bob = signup_and_login(web.url), signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "alice's"}, headers=alice).json()
    assert httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=alice).status_code == 200
    assert _cached_task(services, task["id"]) is not None
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
    ready = httpx.get(f"{web.url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": True, "redis": False}


def test_readyz_is_ready_when_database_and_redis_answer(spawn: Spawn) -> None:
    web = spawn("web")
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


def test_requests_that_find_the_cache_epoch_unknown_share_one_database_read(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst on a fresh process (or after new Redis connections) reads the epoch once, not once per request.

    Each read took a pool connection, and then each request missed the cache and took another for its data:
    under load the requests queued for the pool for seconds.
    """
    reads = 0
    real = repository.get_cache_epoch

    async def counted(conn: repository.AsyncConn) -> int:
        nonlocal reads
        reads += 1
        return await real(conn)

    monkeypatch.setattr(repository, "get_cache_epoch", counted)
    settings = Settings(**{key: value for key, value in app_env.items() if key in Settings.model_fields})  # type: ignore[arg-type]

    async def burst() -> None:
        pool = create_async_pool(settings)
        await pool.open()
        client = create_async_client(settings)
        try:
            cache = Cache(client, 60, pool)
            await asyncio.gather(*(cache.get_many("task:none") for _ in range(50)))
        finally:
            await client.aclose()
            await pool.close()

    asyncio.run(burst())
    assert reads == 1
