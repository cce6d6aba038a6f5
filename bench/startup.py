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
from dataclasses import dataclass, field
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

uvicorn.run(
    app, host="127.0.0.1", port=int(os.environ["PORT"]), loop="uvloop", http="httptools", lifespan="off",
    log_level="warning",
)
"""


@dataclass
class Variant:
    """One way of starting a server, and what its runs measured."""

    label: str
    argv: list[str]
    env: dict[str, str]
    live: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    stop: list[float] = field(default_factory=list)

    def start_and_stop(self) -> None:
        port = harness.free_port()
        started = time.perf_counter()
        with harness.process(self.argv, env={**self.env, "PORT": str(port)}, stdout=subprocess.DEVNULL) as proc:
            self.live.append(until_ok(port, "/healthz", proc) - started)
            self.ready.append(until_ok(port, "/readyz", proc) - started)
            stopping = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
            self.stop.append(time.perf_counter() - stopping)

    def report(self) -> None:
        print(f"{self.label}: {' '.join(self.argv[:2])}")
        for name, values in (
            ("exec → /healthz 200", self.live),
            ("exec → /readyz 200", self.ready),
            ("SIGTERM → exit", self.stop),
        ):
            print(f"  {name:22} median {statistics.median(values):.3f}s  max {max(values):.3f}s  ({len(values)} runs)")


def main(runs: int, install: str) -> None:
    runtime = harness.runtime_alle() if install in ("runtime", "both") else None
    python = str(Path(runtime).parent / "python") if runtime is not None else sys.executable
    with harness.release("bench", LOG_LEVEL="WARNING") as env:
        # The bare server's start says how fast this machine starts a server now.
        variants = [Variant("baseline, uvicorn with a bare ASGI app", [python, "-c", HELLO], env)]
        if runtime is not None:
            variants.append(Variant("runtime install, as in the image", [runtime, "web"], env))
            # Production runs two processes per instance, forked by gunicorn from one that built the app.
            label = "runtime install, WEB_CONCURRENCY=2 as in production (ready: the first process to answer)"
            variants.append(Variant(label, [runtime, "web"], {**env, "WEB_CONCURRENCY": "2"}))
        if install in ("dev", "both"):
            variants.append(Variant("dev venv", [str(Path(sys.executable).parent / "alle"), "web"], env))
        # Round by round, each variant once: this VM's speed drifts by a third within minutes, and a variant
        # measured in a block of its own would be compared with the others at another speed.
        for _ in range(runs):
            for variant in variants:
                variant.start_and_stop()
        for variant in variants:
            variant.report()


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
