"""Settings come only from the environment (twelve-factor III), are read once and validated at start."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from ipaddress import IPv4Address
from typing import Annotated

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: The env names every process receives, in every stack. The Pulumi program sets exactly these.
CONTRACT_ENV = (
    "APP_ENV",
    "RELEASE",
    "LOG_LEVEL",
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_CA_CERT",
    "STORAGE_BUCKET",
    "SECRET_KEY",
    "GOOGLE_CLOUD_PROJECT",
    "MAIL_API_KEY",
    "MAIL_FROM",
    "DATABASE_POOL_SIZE",
    "WEB_CONCURRENCY",
    "MAX_REQUESTS_IN_FLIGHT",
    "TRUSTED_PROXY_HOPS",
)

#: A rate such as `10/minute`: a count per second, minute, hour or day.
_RATE = r"^[1-9][0-9]{0,5}/(second|minute|hour|day)$"
#: Argon2id's memory per password hash as RFC 9106's second recommended option (pwdlib's `recommended()`): 64 MiB.
FULL_HASH_MEMORY_KIB = 65536
_PLACEHOLDERS = {"changeme", "change-me", "secret", "development-secret-key-not-for-production"}


class AppEnv(StrEnum):
    development = "development"
    test = "test"
    staging = "staging"
    production = "production"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def _level_in_any_case(value: object) -> object:
    """`info` and `INFO` alike, as .env files and other tools write them."""
    return value.upper() if isinstance(value, str) else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore")

    APP_ENV: AppEnv
    RELEASE: Annotated[str, Field(min_length=1, max_length=63)]
    LOG_LEVEL: Annotated[LogLevel, BeforeValidator(_level_in_any_case)] = LogLevel.INFO
    PORT: Annotated[int, Field(ge=1, le=65535)] = 8080
    #: The address web listens on: every IPv4 address, as Cloud Run routes to the container's port; bin/run-local
    #: keeps a developer's web to this machine with 127.0.0.1. A name of the app's own: shells and front-end tools
    #: export HOST (tcsh, the machine's name; webpack, localhost). IPv4 only, so that one process and several
    #: listen alike (asyncio's own socket for "::" would take IPv6 alone, gunicorn's both).
    WEB_HOST: IPv4Address = IPv4Address("0.0.0.0")  # noqa: S104 - see above
    DATABASE_URL: str
    REDIS_URL: str
    REDIS_CA_CERT: str | None = None
    STORAGE_BUCKET: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")]
    SECRET_KEY: Annotated[str, Field(min_length=32)]
    GOOGLE_CLOUD_PROJECT: str | None = None
    MAIL_API_KEY: str | None = None
    MAIL_FROM: str = "alle@example.com"
    # Origins of a separately hosted web client, comma-separated. Empty: the client is same-origin, no CORS.
    CORS_ORIGIN: Annotated[list[str], NoDecode] = []
    #: SendGrid's v3 send endpoint; the worker tests point it at a local stand-in.
    MAIL_API_URL: Annotated[str, Field(pattern=r"^https?://")] = "https://api.sendgrid.com/v3/mail/send"
    # Tuning knobs with production defaults; tests shorten them.
    SESSION_TTL_SECONDS: Annotated[int, Field(ge=60)] = 7 * 24 * 3600
    CACHE_TTL_SECONDS: Annotated[int, Field(ge=1)] = 300
    #: After a Redis call fails, how long the web process leaves Redis alone (alle.cache.Breaker).
    REDIS_BREAKER_SECONDS: Annotated[float, Field(gt=0, le=3600)] = 5
    #: Log-in attempts allowed per account from one client address, and per client address, in `limits` notation
    #: (alle/api/throttle.py).
    LOGIN_ATTEMPTS_PER_ACCOUNT: Annotated[str, Field(pattern=_RATE)] = "10/minute"
    LOGIN_ATTEMPTS_PER_ADDRESS: Annotated[str, Field(pattern=_RATE)] = "60/minute"
    WORKER_THREADS: Annotated[int, Field(ge=1, le=64)] = 4
    QUEUE_HEARTBEAT_TIMEOUT_SECONDS: Annotated[int, Field(ge=1)] = 60
    QUEUE_MAX_RETRIES: Annotated[int, Field(ge=0, le=50)] = 8
    QUEUE_MIN_BACKOFF_MS: Annotated[int, Field(ge=10)] = 5_000
    # The drain, then about a second to close the pools, before gunicorn's kill at 9 s (alle.api.prefork) and Cloud
    # Run's at 10 s.
    SHUTDOWN_GRACE_SECONDS: Annotated[int, Field(ge=1, le=8)] = 8
    #: Argon2id's memory per password hash (alle.security); only development and test may set less than 64 MiB.
    PASSWORD_HASH_MEMORY_KIB: Annotated[int, Field(ge=64, le=1_048_576)] = FULL_HASH_MEMORY_KIB
    # Capacity, set together by the Pulumi program (app/README.md, "Concurrency and connections"):
    # Cloud Run concurrency = WEB_CONCURRENCY × MAX_REQUESTS_IN_FLIGHT; connections = processes × pool.
    DATABASE_POOL_SIZE: Annotated[int, Field(ge=1, le=100)] = 10
    WEB_CONCURRENCY: Annotated[int, Field(ge=1, le=16)] = 1
    #: 32: what one process serves within the latency promised (p99 under 150 ms) on its slowest route, the task
    #: list, at about 400 a second per vCPU (README "Performance"); the same default as alle:webRequestsPerProcess.
    MAX_REQUESTS_IN_FLIGHT: Annotated[int, Field(ge=1, le=1000)] = 32
    #: How many X-Forwarded-For entries, from the right, our own front ends append; the client is the leftmost of
    #: them (alle/api/forwarded.py). 1: Cloud Run's run.app URL; 2: behind the external Application Load Balancer;
    #: 0: ignore the header (reached directly). The Pulumi program sets it from the stack's edge; the default is 0,
    #: so a process that is not told which front end it sits behind trusts no client-written entry.
    TRUSTED_PROXY_HOPS: Annotated[int, Field(ge=0, le=5)] = 0

    @field_validator("DATABASE_URL")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// URL")
        return value

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("REDIS_CA_CERT")
    @classmethod
    def _pem(cls, value: str | None) -> str | None:
        if value and "-----BEGIN CERTIFICATE-----" not in value:
            raise ValueError("expected a PEM certificate (-----BEGIN CERTIFICATE-----)")
        return value or None

    @field_validator("CORS_ORIGIN", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        origins = [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        for origin in origins:
            if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", origin):
                raise ValueError(f"{origin!r} is not an origin such as https://alle.app (scheme and host, no path)")
        return origins

    @model_validator(mode="after")
    def _no_placeholders_outside_development(self) -> Settings:
        deployed = self.APP_ENV in (AppEnv.staging, AppEnv.production)
        if deployed and self.SECRET_KEY.lower() in _PLACEHOLDERS:
            raise ValueError("SECRET_KEY: a placeholder value is not allowed in staging or production")
        if deployed and self.PASSWORD_HASH_MEMORY_KIB < FULL_HASH_MEMORY_KIB:
            raise ValueError(
                f"PASSWORD_HASH_MEMORY_KIB: less than {FULL_HASH_MEMORY_KIB} (64 MiB) is not allowed in staging or "
                "production"
            )
        # A page served over plain HTTP can be altered on the way, and it would call the API with the user's token.
        if plain := [origin for origin in self.CORS_ORIGIN if deployed and not origin.startswith("https://")]:
            raise ValueError(f"CORS_ORIGIN: {', '.join(plain)} is not HTTPS, which staging and production require")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """Alembic goes through SQLAlchemy, which needs the psycopg 3 driver named in the URL."""
        _, rest = self.DATABASE_URL.split("://", 1)
        return f"postgresql+psycopg://{rest}"


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is missing"
        key = ".".join(str(p) for p in item["loc"])
        parts.append(f"{key} {message}" if key else message)
    return "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the environment once; on a bad value log one JSON line naming the key and exit non-zero."""
    try:
        return Settings()  # type: ignore[call-arg]
    except ValidationError as error:
        line = {
            "severity": "CRITICAL",
            "message": f"invalid configuration: {_describe(error)}. Set the variable and restart.",
            "time": datetime.now(UTC).isoformat(),
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        raise SystemExit(2) from None
