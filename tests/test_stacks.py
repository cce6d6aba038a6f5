"""The tests' shared runs of the program (tests/stacks.py): each stack and config once per session, and kept for later
sessions while nothing the run read has changed."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import stacks
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
    in the same directory; `made` lists the runs the program made."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.repo = tmp_path / "repo"
        (self.repo / "components").mkdir(parents=True)
        self.write("Pulumi.yaml", "config: {}")
        self.write("components/x.py", "X = 1")
        self.made: list[int] = []
        self.during: Callable[[], object] = lambda: None

    def write(self, name: str, text: str) -> None:
        """Written a minute ago, as a developer's edits are by the time a run starts."""
        (self.repo / name).write_text(text)
        a_minute_ago = time.time() - 60
        os.utime(self.repo / name, (a_minute_ago, a_minute_ago))

    def fresh(self, stack: str, config: dict[str, str]) -> dict[str, Any]:
        self.made.append(len(self.made) + 1)
        self.during()
        return {"resources": [self.made[-1]], "outputs": {}, "inputs": ["components/x.py"]}

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

    sessions.write("components/x.py", "X = 2")
    assert sessions.run()["resources"] == [2]
    sessions.write("Pulumi.yaml", "config: {a: {secret: true}}")
    assert sessions.run()["resources"] == [3]
    monkeypatch.setattr(stacks, "installed", lambda: "3.11.7 pulumi==9.9.9")
    assert sessions.run()["resources"] == [4]
    (sessions.repo / "components" / "x.py").unlink()
    assert sessions.run()["resources"] == [5]
    assert sessions.run()["resources"] == [5]


def test_a_run_during_which_a_file_it_read_was_written_is_not_kept(tmp_path: Path) -> None:
    """Its inputs' digests are taken after the run, so they may be of an edit the run did not see."""
    sessions = Sessions(tmp_path)
    sessions.during = lambda: (sessions.repo / "components" / "x.py").write_text("X = 2")
    sessions.run()
    sessions.during = lambda: None
    sessions.write("components/x.py", "X = 2")  # the same edit, a minute before the next session
    assert sessions.run()["resources"] == [2]
    assert sessions.run()["resources"] == [2]
