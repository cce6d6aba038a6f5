"""The stacks as CI deploys them: the mail key set as a secret, production pinned to staging's digest."""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

from ops.graph import ROOT, Graph, program, stack_config

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


def installed() -> str:
    """This interpreter and every package installed beside it, as one line: what a run's imports depend on beyond
    the repository's own files."""
    packages = sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions())
    return " ".join([sys.version, *packages])


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class RunOnce:
    """`fresh` (ops.graph.run), but a stack and config the program has already run with are not run again.

    Under mocks the program registers the same for the same stack and config
    (test_program.py::test_the_same_stack_and_config_register_the_same_twice), so tests that need the same run
    share it. Each caller gets its own copy, so no test sees another's edits. Thread-safe: a run asked for
    while it is under way is waited for, not started twice.

    Through `shared`, a directory the session's xdist workers all see, the workers share runs too: the first to ask
    runs the program under a lock on that run's file, and the others wait for it and read what it wrote.

    Through `kept`, a directory that outlives the session, a later session reuses a run as long as every file of
    the repository it read (its "inputs", as ops/program.py records them: the program, the components, ops' own
    modules; Pulumi.yaml, which says which keys are secret) and the installed packages are the same: about 30 runs
    of about 0.8 s of CPU each. A changed file, package or Python reruns it; nothing else can change a run.
    """

    def __init__(
        self,
        fresh: Callable[[str, dict[str, str]], dict[str, Any]],
        shared: Path,
        kept: Path | None = None,
        root: Path = ROOT,
    ) -> None:
        self.fresh = fresh
        self.shared = shared
        self.kept = kept
        self.root = root
        self._installed: str | None = None
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
            text = self._kept(done.name)
            if text is None:
                started = time.time()
                text = self._keep(done.name, self.fresh(stack, config), started)
            _write(done, text)
            return text

    def _kept(self, name: str) -> str | None:
        """The result a previous session kept under `name`, if nothing it read has changed since."""
        if self.kept is None or not (self.kept / name).exists():
            return None
        entry = json.loads((self.kept / name).read_text())
        if entry["installed"] != self._packages() or any(
            _digest(self.root / path) != digest for path, digest in entry["inputs"].items()
        ):
            return None
        return str(entry["result"])

    def _keep(self, name: str, data: dict[str, Any], started: float) -> str:
        """The run's result, kept for later sessions unless a file it read was written while it ran: the digests
        are taken afterwards, and must be of what the run read."""
        paths = [self.root / path for path in [*data.pop("inputs", []), "Pulumi.yaml"]]
        inputs = {path.relative_to(self.root).as_posix(): _digest(path) for path in paths}
        text = json.dumps(data)
        # The kernel stamps files from a clock a few milliseconds coarser than time.time(): a second's margin.
        if self.kept is not None and not any(path.exists() and path.stat().st_mtime >= started - 1 for path in paths):
            self.kept.mkdir(parents=True, exist_ok=True)
            _write(self.kept / name, json.dumps({"installed": self._packages(), "inputs": inputs, "result": text}))
        return text

    def _packages(self) -> str:
        if self._installed is None:
            self._installed = installed()
        return self._installed


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader never sees half a file."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)
