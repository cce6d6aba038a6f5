"""How long `alle-ops plan` takes, per stack and for the diff. Prints figures; asserts nothing.

Run: venv/bin/python bench/plan.py [runs]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ops", *args], cwd=ROOT, check=True, capture_output=True)
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
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
