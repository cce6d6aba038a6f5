"""`alle migrate`: forward-only, idempotent, safe when two run at once, and clear when it fails."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from alembic import command
from alembic.config import Config

import backing
from alle import migrate
from alle.config import Settings
from alle.migrate import alembic_config
from conftest import Spawn, blocked_on_lock, signup_and_login, wait_for
from zygote import Captured, Zygote


def _migrate(zygote: Zygote, env: dict[str, str], cwd: Path) -> Captured:
    """`alle migrate`, forked, its stdout and stderr in one pipe; started, not waited for."""
    return zygote.captured(["migrate"], env, cwd, merged=True)


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


EXPECTED = {
    "alembic_version",
    "users",
    "sessions",
    "tasks",
    "attachments",
    "notifications",
    "reports",
    "dead_jobs",
    "cache_epoch",
}
HEAD = "0003"


def test_migrate_twice_is_a_no_op_the_second_time(zygote: Zygote, workdir: Path, app_env: dict[str, str]) -> None:
    again = _migrate(zygote, app_env, workdir)
    output, _ = again.communicate(timeout=60)
    assert again.returncode == 0, output
    assert "Running upgrade" not in output
    assert _tables(app_env["DATABASE_URL"]) == EXPECTED


def test_two_concurrent_migrations_leave_the_schema_correct(
    zygote: Zygote, workdir: Path, services: backing.Backing, app_env: dict[str, str]
) -> None:
    url = services.create_database(f"c_{uuid.uuid4().hex[:12]}")
    env = {**app_env, "DATABASE_URL": url}
    runs = [_migrate(zygote, env, workdir), _migrate(zygote, env, workdir)]
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert sum("Running upgrade  -> 0001" in out for out in outputs) == 1
    assert _tables(url) == EXPECTED
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


def test_failed_migration_says_what_to_do_and_keeps_existing_data(
    zygote: Zygote, workdir: Path, services: backing.Backing, app_env: dict[str, str]
) -> None:
    url = services.create_database(f"f_{uuid.uuid4().hex[:12]}")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE users (legacy text)")
        conn.execute("INSERT INTO users VALUES ('keep me')")
    run = _migrate(zygote, {**app_env, "DATABASE_URL": url}, workdir)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 1
    failure = [json.loads(line) for line in output.splitlines() if "migration failed" in line]
    assert len(failure) == 1
    assert "run `alle migrate` again" in failure[0]["message"]
    assert "already exists" in failure[0]["error"]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT legacy FROM users").fetchall() == [("keep me",)]
        assert "tasks" not in _tables(url)


def test_durable_jobs_migration_downgrades_and_upgrades_again_keeping_existing_reports(app_env: dict[str, str]) -> None:
    url = app_env["DATABASE_URL"]
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO reports (status) VALUES ('pending')")
    config = alembic_config(Settings.model_validate(app_env))
    command.downgrade(config, "0001")
    assert _tables(url) == EXPECTED - {"dead_jobs", "cache_epoch"}
    command.upgrade(config, "head")
    assert _tables(url) == EXPECTED
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT status, enqueued_at FROM reports").fetchall() == [("pending", None)]


def _schema(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
        ).fetchall()
    return [(str(t), str(c)) for t, c in rows]


def _at_revision(url: str, revision: str) -> None:
    """The database as a later release's `alle migrate` would leave it: an expand step, and its revision."""
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE tasks ADD COLUMN added_later text")
        conn.execute("UPDATE alembic_version SET version_num = %s", (revision,))


def test_a_rollback_to_an_older_image_leaves_the_newer_schema_as_it_is(
    zygote: Zygote, workdir: Path, app_env: dict[str, str]
) -> None:
    url = app_env["DATABASE_URL"]
    later = f"{int(HEAD) + 1:04d}"  # what the next release's first migration will be called
    _at_revision(url, later)
    before = _schema(url)
    rollback = _migrate(zygote, app_env, workdir)
    output, _ = rollback.communicate(timeout=60)
    assert rollback.returncode == 0, output
    [warning] = [json.loads(line) for line in output.splitlines() if "newer than this release" in line]
    assert warning["database_revision"] == later and warning["release_head"] == HEAD
    assert "Running upgrade" not in output
    assert _schema(url) == before
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(later,)]


@pytest.mark.parametrize("revision", ["abc123", "0000"])
def test_a_revision_that_is_neither_known_nor_later_stops_the_release(
    zygote: Zygote, workdir: Path, app_env: dict[str, str], revision: str
) -> None:
    url = app_env["DATABASE_URL"]
    _at_revision(url, revision)
    run = _migrate(zygote, app_env, workdir)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 1, output
    [refused] = [json.loads(line) for line in output.splitlines() if "migration refused" in line]
    assert refused["database_revision"] == revision
    assert "restore it from a backup" in refused["message"]


def test_revision_ids_are_a_sequence_so_a_later_one_is_recognised() -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(migrate.__file__).parent / "migrations"))
    revisions = migrate.history(config)
    assert revisions == [f"{n:04d}" for n in range(1, len(revisions) + 1)]
    assert all(migrate.REVISION_ID.match(r) for r in revisions)


def test_a_migration_behind_a_long_transaction_gives_way_to_requests_then_completes(
    zygote: Zygote, workdir: Path, app_env: dict[str, str], spawn: Spawn
) -> None:
    """0002 alters `reports`. Waiting for that table behind a long transaction, the ALTER TABLE used to queue every
    later query on the table, for as long as the transaction ran. Now it gives up after LOCK_TIMEOUT and tries
    again. Requests reading the table meanwhile wait less than the web's 2 s for a pooled connection, including
    the one that finds all 4 of them taken by the others."""
    url = app_env["DATABASE_URL"]
    command.downgrade(alembic_config(Settings.model_validate(app_env)), "0001")
    web = spawn("web", {"DATABASE_POOL_SIZE": "4"})
    auth = signup_and_login(web.url)
    unknown = f"{web.url}/v1/reports/{uuid.uuid4()}"
    with psycopg.connect(url) as long_transaction, ThreadPoolExecutor(max_workers=5) as clients:
        long_transaction.execute("SELECT count(*) FROM reports")  # holds its lock on `reports` until it ends
        run = _migrate(zygote, app_env, workdir)
        wait_for(lambda: blocked_on_lock(url, "alle-migrate"), what="the migration to wait for the lock")
        reads = [clients.submit(httpx.get, unknown, headers=auth, timeout=30) for _ in range(5)]
        assert [read.result().status_code for read in reads] == [404] * 5
        long_transaction.rollback()
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 0, output
    assert "gave up, so that requests do not queue behind it" in output
    assert _tables(url) == EXPECTED
