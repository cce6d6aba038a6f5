"""Schemathesis against a live `alle web` (and worker) on the real backing services: the OpenAPI document must
tell the truth about every operation.

Starts embedded PostgreSQL 16, Redis and the storage emulator in a scratch directory, migrates, starts `alle web`
and `alle worker`, signs up two accounts through the API, then runs `schemathesis run` with every check,
authenticated as the first account and with the second as its peer (object-level authorization). Everything it
started is stopped, and the scratch directory removed, whatever happens. The exit status is Schemathesis's:
0 only when it found no failure. Stopped by SIGINT (Ctrl-C, bin/test) or SIGTERM, it stops all that, says so in one
line and exits 130 or 143. Settings are in `schemathesis.toml` beside this file; arguments are passed on
to `schemathesis run` (e.g. `--max-examples 200`, or `--seed N` to replay a run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

import backing

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "schemathesis.toml"
#: The identities the run uses, as `[auth.wfc]` in schemathesis.toml names them.
USERS = ("alice", "bob")
READY_SECONDS = 30
STOP_SECONDS = 15
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def say(text: str) -> None:
    print(f"schemathesis-run | {text}", flush=True)


@contextmanager
def processes(env: dict[str, str], scratch: Path, *names: str) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    """`alle NAME` for each name, in its own session, output to NAME.log; at the end SIGTERM to all at once (they
    drain in parallel), then SIGKILL to any still running after STOP_SECONDS."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for name in names:
            log = scratch / f"{name}.log"
            with log.open("wb") as out:
                popen = subprocess.Popen(
                    [backing.ALLE, name],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=scratch,
                    start_new_session=True,
                )
            started.append((popen, log))
        yield started
    finally:
        for popen, _ in started:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        for popen, _ in started:
            try:
                popen.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()


def wait_healthy(url: str, popen: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise SystemExit(f"alle web exited before it answered:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"alle web did not answer /healthz within {READY_SECONDS} s:\n{log.read_text()}")


def sign_up(url: str, name: str) -> dict[str, str]:
    """An account made through the API, as any client would; the password passes the policy."""
    credentials = {"email": f"{name}-{uuid.uuid4().hex[:8]}@example.com", "password": f"{name} fuzzes the API well"}
    response = httpx.post(f"{url}/v1/auth/signup", json=credentials, timeout=10)
    if response.status_code != 201:
        raise SystemExit(f"sign-up of {name} failed: {response.status_code} {response.text}")
    return credentials


def wfc_document(accounts: dict[str, dict[str, str]]) -> dict[str, object]:
    """Web Fuzzing Commons auth: each user logs in at POST /v1/auth/login and sends the bearer token it gets."""
    return {
        "auth": [
            {
                "name": name,
                "loginEndpointAuth": {
                    "endpoint": "/v1/auth/login",
                    "verb": "POST",
                    "contentType": "application/json",
                    "payloadRaw": json.dumps(credentials),
                    "token": {
                        "extractFrom": "body",
                        "extractSelector": "/access_token",
                        "sendIn": "header",
                        "sendName": "Authorization",
                        "sendTemplate": "Bearer {token}",
                    },
                },
            }
            for name, credentials in accounts.items()
        ]
    }


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM came: everything started is stopped as the stack unwinds, as at a Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, _: object) -> None:
    """Unwind once; a second signal must not cut short the clean-up the first one started (bin/test kills what is
    left after 30 s, or at once at its own second signal)."""
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    raise Stopped(signum)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="app/dev/schemathesis_run.py",
        description=__doc__.split("\n\n")[0],
        epilog="Any other argument goes to `schemathesis run` (see `venv/bin/schemathesis run --help`).",
    )
    _, passed_on = parser.parse_known_args(argv)
    # Ctrl-C, bin/test stopping its phases (SIGINT to the group) or a supervisor (SIGTERM): the same unwinding.
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, _stop)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="alle-schemathesis-") as scratch:
            status = run(Path(scratch), passed_on)
    except Stopped as stopped:
        say(f"{signal.Signals(stopped.signum).name} received; everything this run started is stopped")
        return 128 + stopped.signum
    say(f"done in {time.monotonic() - started:.1f} s, everything stopped")
    return status


def run(scratch: Path, argv: list[str]) -> int:
    """Everything started here is stopped when this returns or raises, the last started first."""
    started = time.monotonic()
    with ExitStack() as stack:
        services = backing.start(scratch / "backing", persistent=False, durable=False)
        stack.callback(services.stop)
        port = backing.free_port()
        url = f"http://127.0.0.1:{port}"
        env = services.release_env(
            "test",
            "schemathesis",
            PORT=str(port),
            # Every request comes from one address, and the run logs in again after each logout; throttling has
            # its own tests (app/tests/test_auth.py), and here it would turn the run's own log-ins into 429s.
            LOGIN_ATTEMPTS_PER_ACCOUNT="100000/minute",
            LOGIN_ATTEMPTS_PER_ADDRESS="100000/minute",
            # 1 MiB, not 64, per Argon2id hash: what is checked is the API's contract, not the hash's cost, and the
            # run's sign-ups and log-ins would otherwise cost about 0.3 s of CPU each.
            PASSWORD_HASH_MEMORY_KIB="1024",  # noqa: S106 - a cost, not a password
        )
        migrate = subprocess.run([backing.ALLE, "migrate"], env=env, cwd=scratch, capture_output=True, text=True)
        if migrate.returncode != 0:
            raise SystemExit(f"alle migrate failed:\n{migrate.stdout}{migrate.stderr}")
        (web, web_log), _ = stack.enter_context(processes(env, scratch, "web", "worker"))
        wait_healthy(url, web, web_log)
        auth = scratch / "wfc-auth.json"
        auth.write_text(json.dumps(wfc_document({name: sign_up(url, name) for name in USERS})))
        say(f"services, web and worker ready in {time.monotonic() - started:.1f} s; running Schemathesis")
        command = [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.json",
            "--report-dir",
            str(scratch / "report"),
            *argv,
        ]
        # In the scratch directory, so Schemathesis's cache and Hypothesis's database go with it: every run starts
        # afresh, as in CI, and nothing is written into the checkout.
        returncode = run_schemathesis(command, {**os.environ, "ALLE_WFC_AUTH": str(auth)}, scratch)
        if returncode != 0:
            say(f"Schemathesis failed (exit {returncode}); web's errors follow, if it logged any")
            for line in web_log.read_text().splitlines():
                if '"severity": "ERROR"' in line or "Traceback" in line:
                    print(line)
        say("stopping web, worker and the backing services")
        return returncode


def run_schemathesis(command: list[str], env: dict[str, str], cwd: Path) -> int:
    """Its exit status. In a session of its own, so that it gets exactly one SIGINT when this run is stopped,
    however the signal came (to the group, or to this process alone): it then prints its summary with the seed and
    ends. A second would interrupt that summary with a traceback."""
    popen = subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True)
    try:
        return popen.wait()
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)
            try:
                popen.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
