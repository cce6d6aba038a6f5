"""The tests' shared runs of the program (tests/stacks.py): each stack and config once per session, and kept for later
sessions while nothing the run read has changed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import stacks
from ops import reads
from stacks import RunOnce


def test_a_run_is_made_once_for_every_worker_that_shares_the_directory_and_each_caller_gets_its_own_copy(
    tmp_path: Path,
) -> None:
    made: list[str] = []

    def fresh(stack: str, config: dict[str, str]) -> dict[str, Any]:
        made.append(stack)
        time.sleep(0.05)  # a run takes a while: without the lock, the other callers would all start one meanwhile
        return {"resources": [{"stack": stack, "config": config}]}

    workers = [RunOnce(fresh, tmp_path), RunOnce(fresh, tmp_path)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: workers[i % 2]("staging", {"alle:a": "1"}), range(8)))
    assert made == ["staging"]
    assert all(r == {"resources": [{"stack": "staging", "config": {"alle:a": "1"}}]} for r in results)
    results[0]["resources"].clear()
    assert workers[0]("staging", {"alle:a": "1"})["resources"], "an edit by one test reaches no other"
    workers[1]("staging", {"alle:a": "2"})
    workers[0]("production", {"alle:a": "1"})
    assert made == ["staging", "staging", "production"]


class Sessions:
    """Sessions one after another over a repository of two files, each with a RunOnce of its own that keeps runs
    in the same directory; `made` lists the runs the program made, each of which reads components/x.py."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.repo = tmp_path / "repo"
        (self.repo / "components").mkdir(parents=True)
        (self.repo / "Pulumi.yaml").write_text("config: {}")
        (self.repo / "components" / "x.py").write_text("X = 1")
        self.made: list[int] = []
        self.during: Callable[[], object] = lambda: None
        self.error = False
        self.told = True

    def fresh(self, stack: str, config: dict[str, str]) -> dict[str, Any]:
        self.made.append(len(self.made) + 1)
        read = {"components/x.py": reads.digest(self.repo / "components" / "x.py")} if self.told else None
        self.during()
        if self.error:
            return {"error": f"run {self.made[-1]} failed", "inputs": read}
        return {"resources": [self.made[-1]], "outputs": {}, "inputs": read}

    def run(self) -> dict[str, Any]:
        shared = self.tmp_path / f"session-{uuid.uuid4().hex[:8]}"
        shared.mkdir()
        return RunOnce(self.fresh, shared, self.tmp_path / "kept", root=self.repo)("staging", {"alle:a": "1"})


def test_a_later_session_reuses_a_run_until_a_file_it_read_pulumi_yaml_or_the_packages_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = Sessions(tmp_path)
    assert sessions.run() == sessions.run() == {"resources": [1], "outputs": {}}
    assert sessions.made == [1]

    (sessions.repo / "components" / "x.py").write_text("X = 2")
    assert sessions.run()["resources"] == [2]
    (sessions.repo / "Pulumi.yaml").write_text("config: {a: {secret: true}}")
    assert sessions.run()["resources"] == [3]
    monkeypatch.setattr(stacks, "installed", lambda: "3.11.7 pulumi==9.9.9")
    assert sessions.run()["resources"] == [4]
    (sessions.repo / "components" / "x.py").unlink()
    assert sessions.run()["resources"] == [5]
    assert sessions.run()["resources"] == [5]


def test_a_run_is_not_kept_if_a_file_changed_before_it_ended_if_it_failed_or_if_it_cannot_tell_what_it_read(
    tmp_path: Path,
) -> None:
    """What a run read is digested as it is read: an edit made while it ran is not taken for what it read."""
    sessions = Sessions(tmp_path)
    sessions.during = lambda: (sessions.repo / "components" / "x.py").write_text("X = 2")
    sessions.run()
    sessions.during = lambda: None
    assert sessions.run()["resources"] == [2]
    assert sessions.run()["resources"] == [2]

    (sessions.repo / "components" / "x.py").write_text("X = 3")
    sessions.error = True
    assert [sessions.run(), sessions.run()] == [{"error": "run 3 failed"}, {"error": "run 4 failed"}]
    sessions.error, sessions.told = False, False  # a run that could not say all it read (ops/reads.py)
    assert [sessions.run()["resources"], sessions.run()["resources"]] == [[5], [6]]


def test_a_kept_file_that_cannot_be_read_is_a_run_to_make_again(tmp_path: Path) -> None:
    sessions = Sessions(tmp_path)
    sessions.run()
    for kept in (tmp_path / "kept").iterdir():
        kept.write_text('{"format": 1, "inputs": [')  # cut short, as by a crash or an older format
    assert sessions.run()["resources"] == [2]
    assert sessions.run()["resources"] == [2]
