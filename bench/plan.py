"""How long `alle-ops plan` takes, per stack and for the diff. Prints figures; asserts nothing.

Run: venv/bin/python bench/plan.py [RUNS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import harness


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", "ops", *args]
    with harness.process(command, cwd=harness.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise harness.BenchError(f"alle-ops {' '.join(args)} failed with status {proc.returncode}: {err.decode()}")
    return time.perf_counter() - started


def main(runs: int) -> None:
    for args in (
        ["plan", "--stack", "staging"],
        ["plan", "--stack", "production"],
        ["plan", "--diff", "staging", "production"],
    ):
        values = [timed(args) for _ in range(runs)]
        print(f"alle-ops {' '.join(args):38} median {statistics.median(values):.2f}s  max {max(values):.2f}s")


if __name__ == "__main__":
    runs = harness.arguments(__doc__, default_runs=3, runs_help="how many times to run each plan").runs
    sys.exit(harness.run(lambda: main(runs)))
