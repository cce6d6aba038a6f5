"""How long `alle web` takes from exec to answering /healthz and /readyz, on embedded backing services.

Prints figures; asserts nothing. Run: venv/bin/python bench/startup.py [runs]
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# sys.path[0] is bench/, where http.py would shadow the standard library's `http`: put app/dev there instead.
sys.path[0] = str(ROOT / "app" / "dev")

import httpx  # noqa: E402

import backing  # noqa: E402


def until_ok(url: str) -> float:
    while True:
        try:
            if httpx.get(url, timeout=0.2).status_code == 200:
                return time.perf_counter()
        except httpx.HTTPError:
            pass
        time.sleep(0.005)


def main(runs: int) -> None:
    services = backing.start(Path(tempfile.mkdtemp()), persistent=False)
    env = services.release_env("development", "bench", LOG_LEVEL="WARNING")
    subprocess.run(["alle", "migrate"], env=env, check=True, capture_output=True)
    live, ready, stop = [], [], []
    try:
        for _ in range(runs):
            port = backing.free_port()
            started = time.perf_counter()
            proc = subprocess.Popen(["alle", "web"], env={**env, "PORT": str(port)}, stdout=subprocess.DEVNULL)
            live.append(until_ok(f"http://127.0.0.1:{port}/healthz") - started)
            ready.append(until_ok(f"http://127.0.0.1:{port}/readyz") - started)
            stopping = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
            stop.append(time.perf_counter() - stopping)
    finally:
        services.stop()
    for label, values in (("exec → /healthz 200", live), ("exec → /readyz 200", ready), ("SIGTERM → exit", stop)):
        print(f"{label:22} median {statistics.median(values):.3f}s  max {max(values):.3f}s  ({runs} runs)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
