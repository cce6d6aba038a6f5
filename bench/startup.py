"""How long `alle web` takes from exec to answering /healthz and /readyz, on embedded backing services.

Measured first for uvicorn serving a bare ASGI app (the baseline: how fast this machine starts a server now), then
for `alle` installed as the image installs it (the locked runtime set only), with one process and with
production's two, then for the dev venv's `alle`, which also imports what the dev tools brought in.
Prints figures; asserts nothing.
Run: venv/bin/python bench/startup.py [RUNS]
"""

from __future__ import annotations

import argparse
import http.client
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import harness

#: A web process that has not answered by then is broken, not slow.
READY_WITHIN = 120


def answers_200(port: int, path: str) -> bool:
    """One GET on a fresh connection: cheap, so polling every few ms takes no CPU the starting process needs."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def until_ok(port: int, path: str, proc: subprocess.Popen[bytes]) -> float:
    """When `path` first answered 200; fails if the process exits or never answers."""
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise harness.BenchError(f"alle web exited with status {proc.returncode} before {path} answered 200")
        if answers_200(port, path):
            return time.perf_counter()
        time.sleep(0.005)
    raise harness.BenchError(f"{path} did not answer 200 within {READY_WITHIN} s")


#: The baseline: uvicorn serving a bare ASGI app, started by the same interpreter, with the same server stack.
HELLO = """
import os, uvicorn

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), loop="uvloop", http="httptools", lifespan="off")
"""


def measure(label: str, argv: list[str], env: dict[str, str], runs: int) -> None:
    live, ready, stop = [], [], []
    for _ in range(runs):
        port = harness.free_port()
        started = time.perf_counter()
        with harness.process(argv, env={**env, "PORT": str(port)}, stdout=subprocess.DEVNULL) as proc:
            live.append(until_ok(port, "/healthz", proc) - started)
            ready.append(until_ok(port, "/readyz", proc) - started)
            stopping = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
            stop.append(time.perf_counter() - stopping)
    print(f"{label}: {' '.join(argv[:2])}")
    for name, values in (("exec → /healthz 200", live), ("exec → /readyz 200", ready), ("SIGTERM → exit", stop)):
        print(f"  {name:22} median {statistics.median(values):.3f}s  max {max(values):.3f}s  ({runs} runs)")


def main(runs: int, install: str) -> None:
    runtime = harness.runtime_alle() if install in ("runtime", "both") else None
    python = str(Path(runtime).parent / "python") if runtime is not None else sys.executable
    with harness.release("bench", LOG_LEVEL="WARNING") as env:
        # This VM's speed drifts by a third within minutes: the bare server's start says how fast it is now.
        measure("baseline, uvicorn with a bare ASGI app", [python, "-c", HELLO], env, runs)
        if runtime is not None:
            measure("runtime install, as in the image", [runtime, "web"], env, runs)
            # Production runs two processes per instance, forked by gunicorn from one that built the app.
            production = {**env, "WEB_CONCURRENCY": "2"}
            label = "runtime install, WEB_CONCURRENCY=2 as in production (ready: the first process to answer)"
            measure(label, [runtime, "web"], production, runs)
        if install in ("dev", "both"):
            measure("dev venv", [str(Path(sys.executable).parent / "alle"), "web"], env, runs)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--install",
        choices=("runtime", "dev", "both"),
        default="both",
        help="which `alle` to start: the runtime install (built under .cache/bench on first use), the dev venv's, "
        "or both (default)",
    )


if __name__ == "__main__":
    args = harness.arguments(
        __doc__, default_runs=5, runs_help="how many times to start and stop alle web", options=_options
    )
    sys.exit(harness.run(lambda: main(args.runs, args.install)))
