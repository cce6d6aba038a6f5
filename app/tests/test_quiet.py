"""Start-up is quiet: no warning the project could fix or configure away reaches a process's log."""

from __future__ import annotations

import json

from conftest import Spawn, wait_for


def test_web_and_worker_start_and_stop_without_warnings_or_errors(spawn: Spawn) -> None:
    """An error logged at INFO counts too: gunicorn logs its harmless double close of the port that way."""
    # Fresh interpreters: a forked process would have done its imports, and printed their warnings, in the zygote.
    # The web both ways it runs: alone, and as gunicorn's processes (WEB_CONCURRENCY > 1, as in production).
    alone = spawn("web", {"WEB_CONCURRENCY": "1"}, fresh=True)
    forked = spawn("web", {"WEB_CONCURRENCY": "2"}, fresh=True)
    worker = spawn("worker", fresh=True)
    wait_for(lambda: "worker started" in worker.output(), what="worker start", proc=worker)
    assert [proc.terminate() for proc in (alone, forked, worker)] == [0, 0, 0]
    for proc in (alone, forked, worker):
        records = [json.loads(line) for line in proc.output().splitlines()]
        noisy = [
            r["message"] for r in records if r["severity"] not in ("DEBUG", "INFO") or "error" in r["message"].lower()
        ]
        assert noisy == [], noisy
