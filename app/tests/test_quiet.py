"""Start-up is quiet: no warning the project could fix or configure away reaches a process's log."""

from __future__ import annotations

import json

from conftest import Spawn, wait_for


def test_web_and_worker_start_and_stop_without_warnings(spawn: Spawn) -> None:
    # Fresh interpreters: a forked process would have done its imports, and printed their warnings, in the zygote.
    web, worker = spawn("web", fresh=True), spawn("worker", fresh=True)
    wait_for(lambda: "worker started" in worker.output(), what="worker start", proc=worker)
    assert web.terminate() == 0 and worker.terminate() == 0
    for proc in (web, worker):
        records = [json.loads(line) for line in proc.output().splitlines()]
        noisy = [r["message"] for r in records if r["severity"] not in ("DEBUG", "INFO")]
        assert noisy == [], noisy
