"""alle-ops is friendly: every option explains itself, and every wait says what it waits for and gives up in time."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import pytest

from ops import cli, jobs, smoke
from ops.errors import OpsError
from ops.pulumi_cli import PulumiCli


def _subcommands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in cli.parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


@pytest.mark.parametrize(("verb", "sub"), list(_subcommands()))
def test_every_argument_and_option_has_help_text(verb: str, sub: argparse.ArgumentParser) -> None:
    silent = [a.dest for a in sub._actions if not isinstance(a, argparse._HelpAction) and not a.help]
    assert silent == [], f"alle-ops {verb}: no help for {silent}"


def test_job_help_shows_the_passthrough_after_the_separator(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["job", "--help"])
    out = capsys.readouterr().out
    assert "[-- ARG ...]" in out
    assert "job run generate-report --stack production -- dead-jobs list" in out


class FakeClock:
    """Time that moves one second per look and never sleeps, so waits are tested without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_smoke_says_what_it_waits_for_and_gives_up_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smoke, "time", FakeClock())
    monkeypatch.setattr(smoke, "_call", lambda url, timeout: (503, {"database": "down"}))
    said: list[str] = []
    with pytest.raises(smoke.SmokeError) as raised:
        smoke.wait_ready("https://alle.example", 20, poll_seconds=5, say=said.append)
    assert said[0] == "waiting up to 20 s for https://alle.example/readyz to answer 200, ready"
    progress = said[1:]
    assert len(progress) > 1
    assert all(
        re.fullmatch(r"  https://alle\.example/readyz: 503 \(\{'database': 'down'\}\); \d+ s of 20 s", p)
        for p in progress
    )
    message = str(raised.value)
    assert message.startswith("https://alle.example/readyz answered 503: {'database': 'down'} after ")
    assert message.endswith("allow longer: --timeout") and "\n" not in message


def test_smoke_timeout_flag_bounds_the_wait_and_the_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    assert cli.main(["smoke", "--url", closed, "--timeout", "1"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"waiting up to 1 s for {closed}/readyz to answer 200, ready"
    assert len([line for line in err if line.startswith("alle-ops: ")]) == 1
    assert err[-1].startswith(f"alle-ops: {closed}/readyz did not answer (")


class Operation:
    def __init__(self, polls_until_done: int | None) -> None:
        self.polls = 0
        self.until = polls_until_done

    def done(self) -> bool:
        self.polls += 1
        return self.until is not None and self.polls > self.until


EXECUTION = "projects/p/locations/europe-west1/jobs/alle-staging-migrate/executions/alle-staging-migrate-x7k2p"


def test_job_wait_reports_elapsed_time_until_the_execution_finishes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "time", FakeClock())
    said: list[str] = []
    jobs.wait_done(Operation(polls_until_done=2), EXECUTION, timeout=600, poll_seconds=10, say=said.append)
    assert len(said) == 2
    assert all(re.fullmatch(r"  waiting for alle-staging-migrate-x7k2p to finish: \d+ s of 600 s", s) for s in said)


def test_job_wait_stops_at_the_timeout_with_one_line_saying_the_job_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "time", FakeClock())
    with pytest.raises(OpsError) as raised:
        jobs.wait_done(Operation(polls_until_done=None), EXECUTION, timeout=60, poll_seconds=10, say=lambda _: None)
    message = str(raised.value)
    assert message.startswith("alle-staging-migrate-x7k2p is still running after ")
    assert "goes on in Cloud Run" in message and message.endswith("allow longer with --timeout.")
    assert "\n" not in message


@pytest.mark.parametrize("url", ["127.0.0.1:9", "ftp://alle.example", "https://"])
def test_smoke_refuses_a_url_without_an_http_scheme_and_a_host_at_once(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a scheme urllib fails only when called ("unknown url type"), which the smoke test retried for its
    whole timeout."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["smoke", "--url", url, "--timeout", "1"])
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert errors == [
        f"alle-ops smoke: error: argument --url: {url!r} is not an http(s) URL with a host, "
        "e.g. https://staging.alle.app"
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["smoke", "--url", "https://alle.example", "--timeout", "0"],
        ["smoke", "--url", "https://alle.example", "--timeout", "-5"],
        ["smoke", "--url", "https://alle.example", "--timeout", "nan"],
        ["job", "run", "migrate", "--stack", "staging", "--timeout", "0"],
        ["migrate", "retry", "--stack", "staging", "--timeout", "-1"],
        ["traffic", "rollback", "--stack", "staging", "--timeout", "0"],
    ],
)
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused_at_parsing(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert f"argument --timeout: {argv[-1]!r} is not a positive number of seconds" in capsys.readouterr().err


@contextlib.contextmanager
def _stalling_site(ready: bytes) -> Iterator[str]:
    """/readyz answers `ready` at once; every other path accepts the request and answers nothing until the end."""
    released = threading.Event()

    class Stall(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/readyz":
                released.wait()
            self.send_response(200)
            self.send_header("Content-Length", str(len(ready)))
            self.end_headers()
            self.wfile.write(ready)

        def log_message(self, *args: Any) -> None:
            """Quiet: the assertion says what matters."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stall)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        released.set()
        server.shutdown()
        server.server_close()


def test_smoke_checks_after_readyz_get_only_the_time_left_and_say_what_they_wait_for() -> None:
    """Each request after /readyz used to wait up to 15 s, unannounced and outside --timeout."""
    said: list[str] = []
    with _stalling_site(b'{"status": "ready", "release": "r1"}') as base:
        started = time.monotonic()
        with pytest.raises(smoke.SmokeError) as raised:
            smoke.smoke(base, wait_seconds=2, say=said.append, every=0.2)
        took = time.monotonic() - started
    assert took < 10, "bounded by --timeout (2 s), not by the 15 s each request may take"
    message = str(raised.value)
    assert re.fullmatch(
        rf"GET {base}/ did not answer in the \d+ s left of --timeout 2 s; check the service's logs, "
        r"or allow longer: --timeout",
        message,
    )
    assert any(re.fullmatch(rf"  waiting for GET {base}/: \d+ s of \d+ s", line) for line in said), said


# `pulumi up` ---------------------------------------------------------------------------------------------------------

WEB = "alle-staging-web-{}-0a1b2c"
#: What a stack mid-canary exports: enough for `traffic shift` and `traffic rollback` to get to their `pulumi up`.
OUTPUTS = {
    "release": "r2",
    "previous_revision": WEB.format("r1"),
    "web_revision": WEB.format("r2"),
    "web_traffic": {WEB.format("r2"): 10, WEB.format("r1"): 90},
}


class StubPulumi(Protocol):
    def __call__(self, up: str, query: str = ...) -> Path: ...


@pytest.fixture
def stub_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StubPulumi]:
    """A stand-in `pulumi` first on PATH: `stack output` answers OUTPUTS, `config set` succeeds, `up` runs the shell
    the test gives (with $DIR, where it may leave files). Logs go under the test's directory; any process the stub
    left is killed at the end, whatever the test found."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "outputs.json").write_text(json.dumps(OUTPUTS))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "logs"))

    def install(up: str, query: str = 'cat "$DIR/outputs.json"') -> Path:
        script = tmp_path / "bin" / "pulumi"
        script.write_text(
            f'#!/bin/sh\nDIR="{tmp_path}"\necho "$@" >> "$DIR/calls"\n'
            f'case "$1" in\n  stack) {query} ;;\n  config) ;;\n  up)\n{up}\n  ;;\nesac\n'
        )
        script.chmod(0o755)
        return tmp_path

    yield install
    for pid_file in tmp_path.glob("*.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), 9)


def _alle_ops_errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("alle-ops")]


def test_pulumi_up_streams_its_output_and_says_what_it_waits_for_until_it_ends(
    stub_pulumi: StubPulumi,
) -> None:
    """A migration's `pulumi up` may take 40 minutes: the operator sees Pulumi's own lines as they come, and what
    is awaited for how long while it is silent. It ends when Pulumi does, and its log goes with a success."""
    home = stub_pulumi('echo "Updating (staging)"\nwhile [ ! -e "$DIR/go" ]; do sleep 0.05; done\necho "Resources: 1"')
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("  waiting for pulumi up on stack staging: "):
            (home / "go").touch()

    PulumiCli(timeout=60, every=0.1, say=say).up("staging", [], replace=["urn:token"])
    assert said[0].startswith("waiting up to 60 s for pulumi up on stack staging; its output follows, and is kept in ")
    assert "Updating (staging)" in said
    assert "Resources: 1" in said
    assert any(re.fullmatch(r"  waiting for pulumi up on stack staging: \d+ s of 60 s", line) for line in said)
    assert (home / "calls").read_text() == "up --stack staging --yes --skip-preview --replace=urn:token\n"
    assert list((home / "logs").iterdir()) == []


UP_COMMANDS = [
    ["migrate", "retry", "--stack", "staging"],
    ["traffic", "shift", "--stack", "staging", "--to", "100"],
    ["traffic", "rollback", "--stack", "staging"],
]


@pytest.mark.parametrize("argv", UP_COMMANDS, ids=lambda argv: " ".join(argv[:2]))
def test_pulumi_up_past_its_timeout_is_interrupted_to_write_its_state_and_fails_in_one_line(
    argv: list[str], stub_pulumi: StubPulumi, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGINT, as Ctrl-C: Pulumi finishes what is in flight and writes its state. The line says what timed out,
    where the output is and what to do."""
    home = stub_pulumi(
        'trap \'echo "cancelled; state written"; touch "$DIR/interrupted"; exit 255\' INT\n'
        'echo "Updating (staging)"\nwhile :; do sleep 0.05; done'
    )
    assert cli.main([*argv, "--timeout", "1"]) == 1
    assert (home / "interrupted").exists()
    err = capsys.readouterr().err
    assert "waiting up to 1 s for pulumi up on stack staging" in err
    [line] = _alle_ops_errors(err)
    [log] = (home / "logs").iterdir()
    assert line == (
        "alle-ops: pulumi up on stack staging did not finish within 1 s; stopped with SIGINT, it wrote its state. "
        f"See what it was waiting on in {log}, then run the command again (allow longer: --timeout)"
    )
    assert log.read_text() == "Updating (staging)\ncancelled; state written\n"


def test_pulumi_up_that_ignores_sigint_is_killed_after_the_grace_period_plugins_and_all(
    stub_pulumi: StubPulumi,
) -> None:
    home = stub_pulumi(
        "trap '' INT\n"
        'sleep 300 & echo $! > "$DIR/plugin.pid"\n'
        'echo "Updating (staging)"\nwhile :; do sleep 0.05; done'
    )
    with pytest.raises(OpsError) as raised:
        PulumiCli(timeout=0.5, every=0.1, grace=0.5, say=lambda _: None).up("staging", ["urn:web"])
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        "pulumi up on stack staging did not finish within 0.5 s, did not stop within 0.5 s of SIGINT and was killed; "
    )
    assert "run `pulumi refresh --stack staging` before the next up" in message
    plugin = Path(f"/proc/{(home / 'plugin.pid').read_text().strip()}/stat")
    deadline = time.monotonic() + 10
    while plugin.exists() and plugin.read_text().split(") ")[-1][0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not plugin.exists() or plugin.read_text().split(") ")[-1][0] == "Z", "the whole process group was killed"


FAILED_UP = """echo "Updating (staging):"
echo "  pulumi:pulumi:Stack alle-staging  **failed** 1 error"
echo "Diagnostics:"
echo "  gcp:cloudrunv2:Job (alle-staging-migrate):"
echo "    error: 1 error occurred:" >&2
echo "    * Error waiting for execution: migration failed" >&2
echo "Resources:"
exit 255"""


def test_a_failed_pulumi_up_is_one_line_naming_its_error_and_the_log_of_all_its_output(
    stub_pulumi: StubPulumi, capsys: pytest.CaptureFixture[str]
) -> None:
    home = stub_pulumi(FAILED_UP)
    assert cli.main(["migrate", "retry", "--stack", "staging"]) == 1
    err = capsys.readouterr().err
    assert "  gcp:cloudrunv2:Job (alle-staging-migrate):" in err.splitlines(), "Pulumi's stdout, streamed"
    [line] = _alle_ops_errors(err)
    [log] = (home / "logs").iterdir()
    assert line == (
        "alle-ops: pulumi up on stack staging failed (exit 255): error: 1 error occurred: "
        f"* Error waiting for execution: migration failed (all of its output: {log})"
    )
    assert "**failed** 1 error" in log.read_text() and "migration failed" in log.read_text()


def test_a_failed_pulumi_query_is_one_line(stub_pulumi: StubPulumi, capsys: pytest.CaptureFixture[str]) -> None:
    stub_pulumi(
        "exit 0", query='echo "error: no stack named \'staging\' found" >&2; echo "  (see pulumi login)" >&2; exit 255'
    )
    assert cli.main(["traffic", "shift", "--stack", "staging", "--to", "100"]) == 1
    assert capsys.readouterr().err == (
        "alle-ops: `pulumi stack output --json --stack staging` failed: error: no stack named 'staging' found\n"
    )
