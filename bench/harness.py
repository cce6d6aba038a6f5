"""What every benchmark shares: whatever it starts is stopped on any exit, Ctrl-C, SIGTERM or an error.

A benchmark is `sys.exit(harness.run(main))`; inside, `with harness.release(...)` for migrated embedded
services and `with harness.process(...)` for each process it starts. Run with the venv's interpreter, nothing
on PATH needed: `venv/bin/python bench/NAME.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The runtime's venv, as app/Dockerfile builds it; rebuilt when the lock changes.
RUNTIME_VENV = ROOT / ".cache" / "bench" / "runtime"
sys.path.insert(0, str(ROOT / "app" / "dev"))

import backing  # noqa: E402


class BenchError(Exception):
    """Something the benchmark needs went wrong; the message says what, in one sentence."""


def arguments(
    doc: str | None,
    *,
    default_runs: int,
    runs_help: str,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """Every benchmark takes the number of runs, and says what it measures under --help; `options` adds its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "runs", type=int, nargs="?", default=default_runs, help=f"{runs_help} (default: {default_runs})"
    )
    if options is not None:
        options(parser)
    return parser.parse_args()


def free_port() -> int:
    return backing.free_port()


def _interrupt(signum: int, _: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(main: Callable[[], None]) -> int:
    """Run a benchmark; SIGTERM unwinds like Ctrl-C, so every `with` below cleans up before the exit."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; everything the benchmark started is stopped.", file=sys.stderr)
        return 130
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    return 0


@contextmanager
def release(release_id: str, **extra: str) -> Iterator[dict[str, str]]:
    """Embedded PostgreSQL, Redis and storage emulator in a temporary directory, migrated; yields `alle`'s env."""
    with tempfile.TemporaryDirectory(prefix="alle-bench-") as root, backing.start(Path(root), persistent=False) as svc:
        env = svc.release_env("development", release_id, **extra)
        migrate = subprocess.run(["alle", "migrate"], env=env, capture_output=True, text=True, check=False)
        if migrate.returncode != 0:
            raise BenchError(f"alle migrate failed with status {migrate.returncode}:\n{migrate.stdout}{migrate.stderr}")
        yield env


def _run(*argv: str | Path) -> None:
    done = subprocess.run([str(arg) for arg in argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        command = " ".join(str(arg) for arg in argv)
        raise BenchError(f"{command} failed with status {done.returncode}:\n{done.stdout}{done.stderr}")


def runtime_alle() -> str:
    """`alle` installed as app/Dockerfile installs it: the locked runtime set, then this checkout's app, not editable.

    The dev venv also holds the Pulumi SDK and the test tools, and some runtime libraries import what they find:
    redis-py imports OpenTelemetry's SDK, structlog imports rich. That is about 0.1 s of start-up no deployed
    process has. The first run builds the venv (about a minute, from the package index); later runs only build
    the app's wheel with the dev venv's setuptools and reinstall it (a few seconds, offline).
    """
    lock = ROOT / "app" / "requirements.txt"
    digest = hashlib.sha256(lock.read_bytes() + f"{sys.base_prefix} {sys.version}".encode()).hexdigest()
    stamp = RUNTIME_VENV / "lock.sha256"
    python = RUNTIME_VENV / "bin" / "python"
    pip = (python, "-m", "pip", "--quiet", "--disable-pip-version-check")
    if not stamp.is_file() or stamp.read_text() != digest:
        shutil.rmtree(RUNTIME_VENV, ignore_errors=True)
        _run(sys.executable, "-m", "venv", RUNTIME_VENV)
        _run(*pip, "install", "--require-hashes", "-r", lock)
        _run(*pip, "uninstall", "--yes", "setuptools")
        stamp.write_text(digest)
    with tempfile.TemporaryDirectory(prefix="alle-bench-app-") as build:
        source, wheels = Path(build) / "source", Path(build) / "wheels"
        source.mkdir()
        shutil.copy(ROOT / "app" / "pyproject.toml", source)
        shutil.copytree(ROOT / "app" / "alle", source / "alle", ignore=shutil.ignore_patterns("__pycache__"))
        _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", wheels, source)
        _run(*pip, "install", "--no-deps", "--force-reinstall", *wheels.glob("alle-*.whl"))
    return str(RUNTIME_VENV / "bin" / "alle")


@contextmanager
def process(args: Sequence[str], *, grace: float = 15, **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own process group, so on exit it and anything it started get SIGTERM, then SIGKILL."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(list(args), start_new_session=True, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind in its group
