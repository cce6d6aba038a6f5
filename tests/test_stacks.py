"""The tests' shared runs of the program (tests/stacks.py) run each stack and config once per session."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
