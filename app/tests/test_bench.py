"""Benchmarks run as the README writes them, with nothing on PATH, and stop everything they started when stopped.

The start-up benchmark runs with `--install dev` here: its runtime install is a venv built from the package index
on first use, which a test should not wait for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_for
from procfs import alive, children, command_line, processes_with_cwd_under

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """The benchmark's TMPDIR: PostgreSQL's socket path must stay under the 107 bytes AF_UNIX allows."""
    with tempfile.TemporaryDirectory(prefix="alle-") as path:
        yield Path(path)


def test_startup_bench_interrupted_mid_run_stops_web_and_the_backing_services(short_tmp: Path) -> None:
    tmp_path = short_tmp
    bench = subprocess.Popen(
        [sys.executable, "bench/startup.py", "5", "--install", "dev"],  # the runtime install takes a minute
        cwd=ROOT,
        env={"HOME": str(tmp_path), "TMPDIR": str(tmp_path)},  # no PATH: the README's command must work as is
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        started: list[int] = []

        def web_running() -> bool:
            assert bench.poll() is None, f"the benchmark ended early:\n{bench.communicate()[0]}"
            web = [pid for pid in children(bench.pid) if command_line(pid)[-1:] == ["web"]]
            started[:] = web + processes_with_cwd_under(tmp_path)
            return bool(web)

        wait_for(web_running, what="the benchmark's alle web", timeout=180)
        os.kill(bench.pid, signal.SIGTERM)
        output, _ = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
    assert bench.returncode == 130, output
    assert "interrupted; everything the benchmark started is stopped." in output
    assert len(started) >= 3, "expected alle web, and PostgreSQL and Redis in the benchmark's temporary directory"
    assert [pid for pid in started if alive(pid)] == []
    assert list(tmp_path.glob("alle-bench-*")) == [], "the temporary data directory was left behind"
