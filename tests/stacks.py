"""The stacks as CI deploys them: the mail key set as a secret, production pinned to staging's digest."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

from ops import reads
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


#: Environment variables the Pulumi SDKs read (config, settings, provider defaults): a forked run inherits them.
SDK_ENVIRONMENT = ("PULUMI_", "GOOGLE_", "CLOUDSDK_")
#: Bumped when what a kept run's file holds changes; an older file is a miss.
KEPT_FORMAT = 1


def installed() -> str:
    """This interpreter, every package installed beside it and the SDKs' environment variables, as one digest:
    what a run depends on beyond the repository's own files. A package edited in place, without a new version, is not
    seen: `rm -rf .cache/program-runs` after that."""
    packages = sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions())
    environment = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(SDK_ENVIRONMENT))
    # A digest: the variables may hold tokens and passphrases, which have no place in a file.
    return hashlib.sha256("\n".join([sys.version, *packages, *environment]).encode()).hexdigest()


class RunOnce:
    """`fresh` (ops.graph.run), but a stack and config the program has already run with are not run again.

    Under mocks the program registers the same for the same stack and config
    (test_program.py::test_the_same_stack_and_config_register_the_same_twice), so tests that need the same run
    share it. Each caller gets its own copy, so no test sees another's edits. Thread-safe: a run asked for
    while it is under way is waited for, not started twice.

    Through `shared`, a directory the session's xdist workers all see, the workers share runs too: the first to ask
    runs the program under a lock on that run's file, and the others wait for it and read what it wrote.

    Through `kept`, a directory that outlives the session, a later session reuses a run (about 0.8 s of CPU each,
    about 30 a session) while everything it read is the same: each file and directory of the repository the run
    or its server read, as they were when read (its "inputs": ops/reads.py), Pulumi.yaml (which says which keys
    are secret; read here before the run) and `installed()`. A run that ended in an error is not kept: what it
    looked for and did not find (a module not yet written) may not be among its inputs.
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
                secrets = reads.digest(self.root / "Pulumi.yaml")
                text = self._keep(done.name, self.fresh(stack, config), secrets)
            _write(done, text)
            return text

    def _kept(self, name: str) -> str | None:
        """The result a previous session kept under `name`, if nothing it read has changed since."""
        if self.kept is None:
            return None
        try:
            entry = json.loads((self.kept / name).read_text())
            if (
                entry["format"] != KEPT_FORMAT
                or entry["installed"] != self._packages()
                or not self._same(entry["inputs"])
            ):
                return None
            return str(entry["result"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # none kept, or a file from another format or cut short: run afresh, and keep that

    def _keep(self, name: str, data: dict[str, Any], secrets: str | None) -> str:
        read = data.pop("inputs", None)  # None: the run could not say all it read (ops/reads.py)
        inputs = {**(read or {}), "Pulumi.yaml": secrets}
        text = json.dumps(data)
        if self.kept is not None and read is not None and "error" not in data:
            self.kept.mkdir(parents=True, exist_ok=True)
            entry = {"format": KEPT_FORMAT, "installed": self._packages(), "inputs": inputs, "result": text}
            _write(self.kept / name, json.dumps(entry))
        return text

    def _same(self, inputs: dict[str, str | None]) -> bool:
        """Each file and directory as the run read it (it may have changed while the run went on: its digest is of
        what the run read, so the entry is then found stale at once)."""
        return all(reads.digest(self.root / path) == digest for path, digest in inputs.items())

    def _packages(self) -> str:
        if self._installed is None:
            self._installed = installed()
        return self._installed


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader never sees half a file, and two sessions writing it at once each write whole."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as partial:
        partial.write(text)
    Path(partial.name).replace(path)
