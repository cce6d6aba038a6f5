"""How long `alle web` takes from exec to answering /healthz and /readyz, on embedded backing services.

Prints figures; asserts nothing. Run: venv/bin/python bench/startup.py [RUNS]
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time

import httpx

import harness

#: A web process that has not answered by then is broken, not slow.
READY_WITHIN = 120


def until_ok(url: str, proc: subprocess.Popen[bytes]) -> float:
    """When `url` first answered 200; fails if the process exits or never answers."""
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise harness.BenchError(f"alle web exited with status {proc.returncode} before {url} answered 200")
        try:
            if httpx.get(url, timeout=0.2).status_code == 200:
                return time.perf_counter()
        except httpx.HTTPError:
            pass
        time.sleep(0.005)
    raise harness.BenchError(f"{url} did not answer 200 within {READY_WITHIN} s")


def main(runs: int) -> None:
    live, ready, stop = [], [], []
    with harness.release("bench", LOG_LEVEL="WARNING") as env:
        for _ in range(runs):
            port = harness.free_port()
            started = time.perf_counter()
            with harness.process(["alle", "web"], env={**env, "PORT": str(port)}, stdout=subprocess.DEVNULL) as proc:
                live.append(until_ok(f"http://127.0.0.1:{port}/healthz", proc) - started)
                ready.append(until_ok(f"http://127.0.0.1:{port}/readyz", proc) - started)
                stopping = time.perf_counter()
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
                stop.append(time.perf_counter() - stopping)
    for label, values in (("exec → /healthz 200", live), ("exec → /readyz 200", ready), ("SIGTERM → exit", stop)):
        print(f"{label:22} median {statistics.median(values):.3f}s  max {max(values):.3f}s  ({runs} runs)")


if __name__ == "__main__":
    runs = harness.arguments(__doc__, default_runs=5, runs_help="how many times to start and stop alle web").runs
    sys.exit(harness.run(lambda: main(runs)))
