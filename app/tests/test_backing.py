"""The embedded services' new PostgreSQL data directories: copies of one initdb, each its own files."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pgserver
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
