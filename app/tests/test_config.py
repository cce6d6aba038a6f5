"""Config only from env: a missing or invalid value stops every process at start with one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import pytest

from conftest import OFFLINE_ENV, ForkedAlle

RunAlle = Callable[[str, dict[str, str]], subprocess.CompletedProcess[str]]


@pytest.fixture
def run_alle(forked_alle: ForkedAlle) -> RunAlle:
    """`alle COMMAND` with `env` and nothing else, forked from the zygote: a start refused for its config reads the
    same env the same way as a fresh interpreter (app/tests/test_zygote.py compares the two)."""

    def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return forked_alle({"PATH": os.environ["PATH"], **env}, command)

    return run


@pytest.mark.parametrize("command", ["web", "worker", "migrate", "cleanup-old-tasks", "generate-report"])
def test_missing_database_url_exits_nonzero_with_one_json_line_naming_it(command: str, run_alle: RunAlle) -> None:
    env = {k: v for k, v in OFFLINE_ENV.items() if k != "DATABASE_URL"}
    result = run_alle(command, env)
    assert result.returncode == 2
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    record = json.loads(lines[0])
    assert record["severity"] == "CRITICAL"
    assert "DATABASE_URL is missing" in record["message"]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("REDIS_URL", "http://cache:6379", "REDIS_URL expected a redis://, rediss:// or unix:// URL"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL expected a postgresql:// URL"),
        ("APP_ENV", "prod", "APP_ENV Input should be 'development', 'test', 'staging' or 'production'"),
        ("SECRET_KEY", "short", "SECRET_KEY String should have at least 32 characters"),
        ("REDIS_CA_CERT", "not a pem", "REDIS_CA_CERT expected a PEM certificate"),
        ("PORT", "99999", "PORT Input should be less than or equal to 65535"),
        ("WEB_HOST", "::", "WEB_HOST Input is not a valid IPv4 address"),
    ],
)
def test_invalid_value_names_key_and_what_is_expected(key: str, value: str, expected: str, run_alle: RunAlle) -> None:
    result = run_alle("web", {**OFFLINE_ENV, key: value})
    assert result.returncode == 2
    assert expected in json.loads(result.stdout)["message"]


def test_placeholder_secret_key_is_refused_in_production(run_alle: RunAlle) -> None:
    env = {**OFFLINE_ENV, "APP_ENV": "production", "SECRET_KEY": "development-secret-key-not-for-production"}
    result = run_alle("web", env)
    assert result.returncode == 2
    assert "placeholder" in json.loads(result.stdout)["message"]


@pytest.mark.parametrize("app_env", ["staging", "production"])
def test_less_than_64_mib_per_password_hash_is_refused_in_staging_and_production(app_env: str) -> None:
    from pydantic import ValidationError

    from alle.config import Settings

    with pytest.raises(ValidationError, match="PASSWORD_HASH_MEMORY_KIB: less than 65536"):
        Settings.model_validate({**OFFLINE_ENV, "APP_ENV": app_env, "PASSWORD_HASH_MEMORY_KIB": "65535"})
    assert Settings.model_validate({**OFFLINE_ENV, "APP_ENV": app_env}).PASSWORD_HASH_MEMORY_KIB == 65536


@pytest.mark.parametrize("app_env", ["staging", "production"])
def test_staging_and_production_trust_only_https_origins_for_cors(app_env: str) -> None:
    from pydantic import ValidationError

    from alle.config import Settings

    with pytest.raises(ValidationError, match=r"CORS_ORIGIN: http://app\.example is not HTTPS"):
        Settings.model_validate(
            {**OFFLINE_ENV, "APP_ENV": app_env, "CORS_ORIGIN": "https://a.example,http://app.example"}
        )
    allowed = Settings.model_validate({**OFFLINE_ENV, "APP_ENV": app_env, "CORS_ORIGIN": "https://a.example"})
    assert allowed.CORS_ORIGIN == ["https://a.example"]
    local = Settings.model_validate({**OFFLINE_ENV, "APP_ENV": "development", "CORS_ORIGIN": "http://127.0.0.1:5173"})
    assert local.CORS_ORIGIN == ["http://127.0.0.1:5173"]


def test_placeholder_secret_key_is_allowed_in_development() -> None:
    from alle.config import Settings

    settings = Settings.model_validate(
        {**OFFLINE_ENV, "APP_ENV": "development", "SECRET_KEY": "development-secret-key-not-for-production"}
    )
    assert settings.APP_ENV == "development"


@pytest.mark.parametrize("value", ["info", "INFO", "Info", "warning", "DEBUG"])
def test_log_level_is_accepted_in_any_case(value: str) -> None:
    from alle.config import Settings

    level = Settings.model_validate({**OFFLINE_ENV, "LOG_LEVEL": value}).LOG_LEVEL
    assert level.value == value.upper()


def test_unknown_log_level_names_the_accepted_ones(run_alle: RunAlle) -> None:
    result = run_alle("web", {**OFFLINE_ENV, "LOG_LEVEL": "verbose"})
    assert result.returncode == 2
    assert "LOG_LEVEL Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'" in json.loads(result.stdout)["message"]
