"""`alle migrate`: forward-only Alembic upgrade, serialised by a PostgreSQL advisory lock.

Migrations are expand/contract: a release only adds what the next one needs and drops what the previous one no
longer uses a release later, so the previous release's code runs on the newer schema. A rollback therefore
runs an older image's `alle migrate` against a database at a revision that image has never seen; that is not
an error to it, and it leaves the schema as it is. A revision that is neither known nor later (a database from
another app, or a hand-edited alembic_version) still stops the release.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from alle.config import Settings
from alle.logs import get_logger

log = get_logger(__name__)

#: Any constant shared by every `alle migrate`; two concurrent runs queue on it instead of racing.
_LOCK_ID = 0x616C6C65
#: Revision ids are a sequence, `0001`, `0002`, …; a later one sorts after this release's head (test_migrate.py
#: checks every migration follows it).
REVISION_ID = re.compile(r"^\d{4}$")
#: How long a migration's statement waits for a table lock. An ALTER TABLE waiting behind a long transaction (a
#: report, an operator's psql) queues every later query on that table behind it, and with them every request
#: that touches it: so it gives up soon, rolls back, and `alle migrate` tries again a little later. Shorter than
#: the web's wait for a pooled connection (alle.db.WEB_POOL_TIMEOUT_SECONDS): requests queued behind it hold
#: the pool's connections meanwhile, and the others must still get one in time.
LOCK_TIMEOUT = "1s"
LOCK_ATTEMPTS = 40
LOCK_RETRY_PAUSE_SECONDS = 2.0


class UnknownRevisionError(Exception):
    """The database is at a revision that this release neither has nor precedes."""


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    return config


def history(config: Config) -> list[str]:
    """This release's revisions, oldest first."""
    return [r.revision for r in reversed(list(ScriptDirectory.from_config(config).walk_revisions()))]


def newer_revision(known: Sequence[str], current: Sequence[str]) -> str | None:
    """The database's revision when a later release wrote it; None when this release knows every current one.

    Raises UnknownRevisionError for a revision this release does not know and that does not follow its head.
    """
    unknown = [revision for revision in current if revision not in known]
    head = known[-1] if known else ""
    for revision in unknown:
        if not (REVISION_ID.match(revision) and REVISION_ID.match(head) and revision > head):
            raise UnknownRevisionError(revision)
    return max(unknown, default=None)


def _current(database_url: str) -> list[str]:
    with psycopg.connect(database_url, autocommit=True, application_name="alle-migrate") as conn:
        if conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,):
            return []
        return [str(row[0]) for row in conn.execute("SELECT version_num FROM alembic_version").fetchall()]


def _gave_up_waiting_for_a_lock(error: BaseException) -> bool:
    """SQLAlchemy wraps the driver's error; the migrations run through it."""
    return isinstance(getattr(error, "orig", error), psycopg.errors.LockNotAvailable)


def _upgrade_giving_way_to_long_transactions(config: Config) -> None:
    """Each revision runs in a transaction of its own, so a retry resumes at the one that gave up."""
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            command.upgrade(config, "head")
        except Exception as error:
            if attempt == LOCK_ATTEMPTS or not _gave_up_waiting_for_a_lock(error):
                raise
            log.warning(
                "a migration waited for a table lock and gave up, so that requests do not queue behind it; "
                "trying again",
                lock_timeout=LOCK_TIMEOUT,
                attempt=attempt,
                of=LOCK_ATTEMPTS,
                error=str(getattr(error, "orig", error)),
            )
            time.sleep(LOCK_RETRY_PAUSE_SECONDS)
        else:
            return


def run(settings: Settings) -> int:
    """Upgrade to head; a failure rolls back the failing migration's transaction and says what to do."""
    config = alembic_config(settings)
    with psycopg.connect(settings.DATABASE_URL, application_name="alle-migrate") as lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            known = history(config)
            try:
                newer = newer_revision(known, _current(settings.DATABASE_URL))
            except UnknownRevisionError as error:
                log.error(
                    "migration refused: the database is at a revision this release neither has nor precedes. "
                    "Check DATABASE_URL points at this app's database, or restore it from a backup.",
                    database_revision=str(error),
                    release_head=known[-1] if known else None,
                )
                return 1
            if newer:
                log.warning(
                    "database schema is newer than this release; left as it is. Migrations are expand/contract, "
                    "so this release runs on it (a rollback).",
                    database_revision=newer,
                    release_head=known[-1] if known else None,
                    release=settings.RELEASE,
                )
                return 0
            log.info("migration started", release=settings.RELEASE)
            _upgrade_giving_way_to_long_transactions(config)
        except Exception as error:  # noqa: BLE001 - any failure is reported in one line, then exit 1
            hint = (
                f"A long transaction held a lock it needs through {LOCK_ATTEMPTS} tries: find it in "
                "pg_stat_activity, let it finish or end it, then run `alle migrate` again."
                if _gave_up_waiting_for_a_lock(error)
                else "Fix the migration or the database, then run `alle migrate` again."
            )
            log.error(
                f"migration failed; the failing revision was rolled back and earlier ones are kept. {hint}",
                error=str(error),
                error_type=type(error).__name__,
            )
            return 1
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    log.info("migration finished", release=settings.RELEASE)
    return 0
