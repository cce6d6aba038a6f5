"""The stacks as CI deploys them: the mail key set as a secret, production pinned to staging's digest."""

from __future__ import annotations

import fcntl
import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ops.graph import Graph, program, stack_config

MAIL_KEY = "SG.mock-sendgrid-key"
#: What `alle-ops promote` pins into production: the digest staging built.
PROMOTED = "europe-west1-docker.pkg.dev/alle-registry/alle/alle@sha256:" + "ab" * 32


def deployed_config(stack: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    config = stack_config(stack) | {"alle:mailApiKey": MAIL_KEY}
    if stack == "production" and not config.get("alle:image"):
        config["alle:image"] = PROMOTED
    return config | (overrides or {})


def deployed(stack: str, overrides: dict[str, str] | None = None) -> Graph:
    return program(stack, deployed_config(stack, overrides))


class RunOnce:
    """`fresh` (ops.graph.run), but a stack and config the program has already run with are not run again.

    Under mocks the program registers the same for the same stack and config
    (test_program.py::test_the_same_stack_and_config_register_the_same_twice), so tests that need the same run
    share it. Each caller gets its own copy, so no test sees another's edits. Thread-safe: a run asked for
    while it is under way is waited for, not started twice.

    Through `shared`, a directory the session's xdist workers all see, the workers share runs too: the first to ask
    runs the program under a lock on that run's file, and the others wait for it and read what it wrote.
    """

    def __init__(self, fresh: Callable[[str, dict[str, str]], dict[str, Any]], shared: Path) -> None:
        self.fresh = fresh
        self.shared = shared
        self._lock = threading.Lock()
        self._runs: dict[str, Future[str]] = {}

    def __call__(self, stack: str, config: dict[str, str]) -> dict[str, Any]:
        key = json.dumps([stack, config], sort_keys=True)
        with self._lock:
            mine = key not in self._runs
            if mine:
                self._runs[key] = Future()
            result = self._runs[key]
        if mine:
            try:
                result.set_result(self._run(key, stack, config))
            except BaseException as error:
                with self._lock:
                    del self._runs[key]  # a run that failed to finish is tried again by the next caller
                result.set_exception(error)  # for callers already waiting on it
                raise
        return dict(json.loads(result.result()))

    def _run(self, key: str, stack: str, config: dict[str, str]) -> str:
        done = self.shared / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
        with done.with_suffix(".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if done.exists():
                return done.read_text()
            text = json.dumps(self.fresh(stack, config))
            partial = done.with_suffix(".partial")
            partial.write_text(text)
            partial.replace(done)
            return text
