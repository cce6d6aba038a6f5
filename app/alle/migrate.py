"""`alle migrate`: forward-only Alembic upgrade, serialised by a PostgreSQL advisory lock."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config

from alle.config import Settings
from alle.logs import get_logger

log = get_logger(__name__)

#: Any constant shared by every `alle migrate`; two concurrent runs queue on it instead of racing.
_LOCK_ID = 0x616C6C65


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    return config


def run(settings: Settings) -> int:
    """Upgrade to head; a failure rolls back the failing migration's transaction and says what to do."""
    config = alembic_config(settings)
    with psycopg.connect(settings.DATABASE_URL, application_name="alle-migrate") as lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            log.info("migration started", release=settings.RELEASE)
            command.upgrade(config, "head")
        except Exception as error:  # noqa: BLE001 - any failure is reported in one line, then exit 1
            log.error(
                "migration failed; the failing revision was rolled back and earlier ones are kept. "
                "Fix the migration or the database, then run `alle migrate` again.",
                error=str(error),
                error_type=type(error).__name__,
            )
            return 1
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    log.info("migration finished", release=settings.RELEASE)
    return 0
