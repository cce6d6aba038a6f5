"""Hot reads come from Redis and are invalidated on write; without Redis the API keeps serving from PostgreSQL."""

from __future__ import annotations

import json

import httpx

import backing
from conftest import Spawn, signup_and_login


def test_task_read_is_cached_in_redis_and_invalidated_on_write(spawn: Spawn, services: backing.Backing) -> None:
    web = spawn("web")
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "cached"}, headers=auth).json()
    httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth)
    keys = [k.decode() for k in services.redis.keys(f"task:*:{task['id']}")]
    assert len(keys) == 1
    assert json.loads(services.redis.get(keys[0]))["title"] == "cached"
    httpx.patch(f"{web.url}/v1/tasks/{task['id']}", json={"title": "fresh"}, headers=auth)
    assert services.redis.keys(f"task:*:{task['id']}") == []
    assert httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth).json()["title"] == "fresh"


def test_cached_read_does_not_hit_the_database(spawn: Spawn, services: backing.Backing) -> None:
    web = spawn("web")
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "original"}, headers=auth).json()
    httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth)
    key = services.redis.keys(f"task:*:{task['id']}")[0]
    services.redis.set(key, json.dumps({**task, "title": "from redis"}))
    assert httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth).json()["title"] == "from redis"


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

    from redis.connection import SSLConnection

    pool = create_client(settings).connection_pool
    assert pool.connection_class is SSLConnection
    connection = pool.make_connection()
    assert isinstance(connection, SSLConnection)
    assert connection.ca_data == pem
    assert connection.cert_reqs == ssl.CERT_REQUIRED
    assert pool.connection_kwargs["password"] == "auth"
