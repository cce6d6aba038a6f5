"""alle-ops is friendly: every option explains itself, and every wait says what it waits for and gives up in time."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from http_stub import QuietHandler, serving

from ops import cli, jobs, pulumi_cli, smoke
from ops.errors import OpsError
from ops.graph import ROOT
from ops.progress import wait
from ops.pulumi_cli import PulumiCli, gist


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


READY = b'{"status": "ready", "release": "r1"}'
SCRIPT = "/assets/app.0123456789abcdef.js"


@contextlib.contextmanager
def _stalling_site(held: dict[str, threading.Event]) -> Iterator[str]:
    """/readyz answers ready at once; / answers the entry page (a strict CSP, naming SCRIPT) and SCRIPT answers too,
    each path in `held` only once its event is set (all are, at the end)."""

    class Stall(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server calls it by this name
            if self.path in held:
                held[self.path].wait()
            body = {"/readyz": READY, "/": f'<script src="{SCRIPT}"></script>'.encode()}.get(self.path, b"")
            self.send_response(200)
            self.send_header("Content-Security-Policy", "script-src 'self'; frame-ancestors 'none'")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Stall) as base:
        try:
            yield base
        finally:  # before the server closes, which waits for its handlers
            for event in held.values():
                event.set()


def test_smoke_checks_after_readyz_get_only_the_time_left_and_say_what_they_wait_for() -> None:
    """Each request after /readyz used to wait up to 15 s, unannounced and outside --timeout. The entry page answers
    only once its wait has been announced; the script it names never answers, and the budget ends that wait."""
    said: list[str] = []
    page, script = threading.Event(), threading.Event()
    with _stalling_site({"/": page, SCRIPT: script}) as base:

        def say(line: str) -> None:
            said.append(line)
            if line.startswith(f"  waiting for GET {base}/: "):
                page.set()

        started = time.monotonic()
        with pytest.raises(smoke.SmokeError) as raised:
            smoke.smoke(base, wait_seconds=4, say=say, every=0.05)
        took = time.monotonic() - started
    assert took < 12, "bounded by --timeout (4 s), not by the 15 s each request may take"
    assert re.fullmatch(
        rf"GET {re.escape(base + SCRIPT)} did not answer in the \d+ s left of --timeout 4 s; check the service's "
        r"logs, or allow longer: --timeout",
        str(raised.value),
    )
    assert any(re.fullmatch(rf"  waiting for GET {re.escape(base)}/: \d+ s of \d+ s", line) for line in said), said


def test_smoke_keeps_part_of_its_timeout_for_the_checks_after_readyz(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release that became ready at the very end of --timeout failed "ran out before GET /" although healthy:
    /readyz may use the budget but min(30 s, a quarter of it), which the checks after it keep."""
    clock = FakeClock()
    monkeypatch.setattr(smoke, "time", clock)
    given: list[tuple[float, float]] = []

    def ready_at_the_last_moment(
        base: str, wait_seconds: float, poll_seconds: float = 3, say: Any = None, kept: float = 0
    ) -> dict[str, Any]:
        given.append((wait_seconds, kept))
        clock.now += wait_seconds
        return {"status": "ready", "release": "r1"}

    monkeypatch.setattr(smoke, "wait_ready", ready_at_the_last_moment)
    with _stalling_site({}) as base, pytest.raises(smoke.SmokeError) as raised:
        smoke.smoke(base, wait_seconds=120, say=lambda _: None)
    assert given == [(90, 30)]
    # The client checks passed; the site has no API, so the first API call is where it stopped.
    assert str(raised.value).startswith("POST /v1/auth/signup answered 501")


def test_smoke_says_readyz_had_only_its_part_of_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smoke, "time", FakeClock())
    monkeypatch.setattr(smoke, "_call", lambda url, timeout: (503, {"database": "down"}))
    with pytest.raises(smoke.SmokeError) as raised:
        smoke.smoke("https://alle.example", wait_seconds=120, say=lambda _: None)
    waited = re.fullmatch(
        r"https://alle\.example/readyz answered 503: \{'database': 'down'\} after (\d+) s of waiting \(the part of "
        r"--timeout 120 s it may use: 30 s are kept for the checks after it\); check the service's logs, or allow "
        r"longer: --timeout",
        str(raised.value),
    )
    assert waited and 90 <= int(waited[1]) < 100, str(raised.value)


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
    # What a test left running, and only that: a pid reaped already may be another process's by now.
    for pid_file in tmp_path.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(tmp_path).encode() in command or command == b"sleep\x00300\x00":
                os.kill(pid, signal.SIGKILL)


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


#: A plugin as Pulumi starts one: in a process group of its own (pulumi/pulumi#934); its pid is written once it is.
PLUGIN = (
    f'{sys.executable} -c \'import os, sys; os.setpgid(0, 0); open(sys.argv[1], "w").write(str(os.getpid())); '
    f'os.execvp("sleep", ["sleep", "300"])\' "$DIR/plugin.pid" &\n'
    'while [ ! -s "$DIR/plugin.pid" ]; do sleep 0.05; done\n'
)


def _signal_at(text: str, signums: list[signal.Signals], said: list[str]) -> Callable[[str], None]:
    """A `say` that notes each line and, at the first holding `text`, sends alle-ops (this process) `signums`."""

    def say(line: str) -> None:
        said.append(line)
        if text in line and not any(text in earlier for earlier in said[:-1]):
            for signum in signums:
                os.kill(os.getpid(), signum)

    return say


def _gone(pid: int) -> bool:
    """Dead (a zombie is), or no such process."""
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(") ", 1)[1][0] == "Z"
    return True


def test_pulumi_up_that_ignores_sigint_is_killed_after_the_grace_period_plugins_and_all(
    stub_pulumi: StubPulumi,
) -> None:
    """Real Pulumi puts each plugin in a process group of its own: killing Pulumi's group left them running. Every
    process of its session is killed."""
    home = stub_pulumi(f"trap '' INT\n{PLUGIN}echo \"Updating (staging)\"\nwhile :; do sleep 0.05; done")
    with pytest.raises(OpsError) as raised:
        PulumiCli(timeout=60, every=0.1, grace=0.5, say=_signal_at("Updating", [signal.SIGTERM], [])).up(
            "staging", ["urn:web"]
        )
    message = str(raised.value)
    assert "\n" not in message
    [log] = (home / "logs").iterdir()
    assert message == (
        "pulumi up on stack staging was interrupted (SIGTERM), did not stop within 0.5 s of SIGINT and was killed. "
        "The state keeps the update's lock and may list operations left pending: run `pulumi cancel --stack staging` "
        "(removes the stale lock), then `pulumi refresh --stack staging` and resolve the pending operations it "
        f"reports, before the next up. Output: {log}"
    )
    plugin = int((home / "plugin.pid").read_text())
    assert _gone(plugin), "the plugin in a process group of its own was killed too"


def test_an_unexpected_error_stops_pulumi_as_a_signal_would_before_it_propagates(
    stub_pulumi: StubPulumi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error in alle-ops used to send Pulumi SIGINT and exit at once; the exit then sent it a second SIGINT
    (PR_SET_PDEATHSIG), which ends Pulumi without writing its state. Now Pulumi has stopped when the error
    propagates, after one SIGINT."""
    home = stub_pulumi(
        'echo $$ > "$DIR/pulumi.pid"\n'
        'trap \'echo INT >> "$DIR/signals"; sleep 0.3; echo "cancelled; state written"; exit 255\' INT\n'
        'echo "Updating (staging)"\nwhile :; do sleep 0.05; done'
    )
    updating = threading.Event()
    calls: list[str] = []

    def failing_first(what: str, *args: Any) -> bool:
        calls.append(what)
        if len(calls) == 1:
            assert updating.wait(60)
            raise RuntimeError("a bug in alle-ops")
        return wait(what, *args)

    def say(line: str) -> None:
        if line == "Updating (staging)":
            updating.set()

    monkeypatch.setattr(pulumi_cli, "wait", failing_first)
    with pytest.raises(RuntimeError, match="a bug in alle-ops"):
        PulumiCli(timeout=60, every=0.1, grace=60, say=say).up("staging", [])
    assert _gone(int((home / "pulumi.pid").read_text())), "stopped before the error went on"
    assert (home / "signals").read_text() == "INT\n"


def test_two_signals_read_together_count_as_two_at_once() -> None:
    """Both bytes came in one read: the second waited in a queue while alle-ops blocked on the empty pipe for the
    next progress line (30 s), and was lost if Pulumi exited meanwhile."""
    with pulumi_cli._Watch() as watch:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)
        with pytest.raises(pulumi_cli._StopSignalError, match="SIGTERM"):
            watch.exited_within(30)
        started = time.monotonic()
        with pytest.raises(pulumi_cli._StopSignalError, match="SIGHUP"):
            watch.exited_within(30)
        assert time.monotonic() - started < 15, "at once, not at the end of the 30 s"


def test_the_wakeup_fd_is_in_before_the_handlers_and_goes_after_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal that came between a handler and the wakeup fd ran the handler with nowhere to write: lost."""
    calls: list[str] = []
    real_signal, real_wakeup = signal.signal, signal.set_wakeup_fd

    def handler(signum: int, action: Any) -> Any:
        calls.append("handler")
        return real_signal(signum, action)

    def wakeup(fd: int, **options: bool) -> int:
        calls.append("wakeup")
        return real_wakeup(fd, **options)

    monkeypatch.setattr(signal, "signal", handler)
    monkeypatch.setattr(signal, "set_wakeup_fd", wakeup)
    with pulumi_cli._Watch():
        pass
    assert calls[0] == calls[-1] == "wakeup"
    assert calls[1:-1] and set(calls[1:-1]) == {"handler"}


def test_pulumi_that_exits_0_as_it_is_stopped_succeeded(stub_pulumi: StubPulumi) -> None:
    """Reported as interrupted, the update was applied all the same, and `migrate retry` run again would migrate
    again. Exit 0 is a success, whatever was asked."""
    home = stub_pulumi(
        'trap \'echo "Resources: 1"; exit 0\' INT\necho "Updating (staging)"\nwhile :; do sleep 0.05; done'
    )
    said: list[str] = []
    PulumiCli(timeout=60, every=0.1, grace=60, say=_signal_at("Updating", [signal.SIGTERM], said)).up("staging", [])
    assert "pulumi up on stack staging finished although a stop was asked (SIGTERM): its update is done" in said
    assert list((home / "logs").iterdir()) == []


def test_a_stalled_stderr_does_not_keep_the_timeout_from_interrupting_pulumi(
    stub_pulumi: StubPulumi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stderr that nobody reads (`2>&1 | less` scrolled back) blocked the main thread in a progress line, and the
    timeout never came. Here it is not read until Pulumi got its SIGINT; the lines that did not fit meanwhile are
    dropped and counted (the log has them)."""
    monkeypatch.setattr(pulumi_cli, "QUEUED_LINES", 100)
    home = stub_pulumi(
        "trap 'echo INT > \"$DIR/interrupted\"; exit 255' INT\n"
        'i=0; while [ $i -lt 1000 ]; do echo "creating $i"; i=$((i + 1)); done\nwhile :; do sleep 0.05; done'
    )
    os.mkfifo(home / "interrupted")
    interrupted = os.open(home / "interrupted", os.O_RDONLY | os.O_NONBLOCK)
    said: list[str] = []
    unread_until_interrupted: list[bool] = []

    def stalled(line: str) -> None:
        if not said:
            readable, _, _ = select.select([interrupted], [], [], 60)
            unread_until_interrupted.append(bool(readable))
        said.append(line)

    try:
        with pytest.raises(OpsError, match="did not finish within 1 s; stopped with SIGINT"):
            PulumiCli(timeout=1, every=0.1, grace=60, say=stalled).up("staging", [])
    finally:
        os.close(interrupted)
    assert unread_until_interrupted == [True], "interrupted while stderr was not read"
    assert any(
        re.fullmatch(r"  \(\d+ lines not shown: stderr was not read; the log has them all\)", line) for line in said
    )


def test_a_successful_up_whose_lines_were_dropped_keeps_its_log(
    stub_pulumi: StubPulumi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The note on dropped lines says the log has them all: after a success too, the log is then kept."""
    monkeypatch.setattr(pulumi_cli, "QUEUED_LINES", 100)
    logs = tmp_path / "up-logs"
    logs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(logs))
    home = stub_pulumi(
        'i=0; while [ $i -lt 1000 ]; do echo "creating $i"; i=$((i + 1)); done\necho done > "$DIR/finished"'
    )
    os.mkfifo(home / "finished")
    finished = os.open(home / "finished", os.O_RDONLY | os.O_NONBLOCK)
    said: list[str] = []

    def stalled(line: str) -> None:
        if not said:
            select.select([finished], [], [], 60)  # stderr is not read until Pulumi has written everything
        said.append(line)

    try:
        PulumiCli(every=0.1, say=stalled).up("staging", [])
    finally:
        os.close(finished)
    assert any("lines not shown" in line for line in said)
    [log] = logs.glob("alle-ops-pulumi-up-staging-*.log")
    assert "creating 999" in log.read_text()


@pytest.mark.parametrize(
    ("output", "error"),
    [
        ("\x1b[?25l\x1b[1;31merror:\x1b[0m quota exceeded\x1b[?25h\n", "error: quota exceeded"),
        (
            "error: see \x1b]8;;https://pulumi.com/docs\x07the docs\x1b]8;;\x07 and \x1b]8;;https://x\x1b\\x\x1b]8;;\x1b\\\n",
            "error: see the docs and x",
        ),
    ],
    ids=["private CSI", "OSC 8 links"],
)
def test_the_gist_leaves_out_terminal_control_sequences(output: str, error: str) -> None:
    assert gist(output) == error


def test_a_plugin_left_holding_pulumis_output_does_not_hold_alle_ops(stub_pulumi: StubPulumi) -> None:
    """Plugins inherit Pulumi's output. One that outlived Pulumi held the pipe alle-ops read, and alle-ops waited on
    it: Pulumi now writes to a file, and alle-ops reads it up to where it was when Pulumi exited."""
    home = stub_pulumi('sleep 300 & echo $! > "$DIR/plugin.pid"\necho "Resources: 1"')
    said: list[str] = []
    started = time.monotonic()
    PulumiCli(timeout=60, every=30, say=said.append).up("staging", [])
    assert time.monotonic() - started < 10, "done when Pulumi is, not when the plugin (300 s) is"
    assert said[-1] == "Resources: 1"
    assert list((home / "logs").iterdir()) == []


def test_a_fully_qualified_stack_name_makes_a_log_file_name_without_slashes(stub_pulumi: StubPulumi) -> None:
    """`organization/alle/staging` is a valid stack name on a self-managed backend; in the log's name its slashes
    named directories that do not exist."""
    home = stub_pulumi('echo "error: the stack is locked" >&2\nexit 255')
    with pytest.raises(OpsError) as raised:
        PulumiCli(timeout=60, say=lambda _: None).up("organization/alle/staging", [])
    [log] = (home / "logs").iterdir()
    assert log.name.startswith("alle-ops-pulumi-up-organization-alle-staging-")
    assert str(raised.value) == (
        f"pulumi up on stack organization/alle/staging failed (exit 255): error: the stack is locked "
        f"(all of its output: {log})"
    )


#: Pulumi's own order: the Diagnostics list the Stack, whose error only says the update failed, before the resource
#: whose error says why; the provider's lines come on stderr.
FAILED_RESOURCE = r"""echo "Updating (staging):"
echo "    pulumi:pulumi:Stack alle-staging  **failed** 1 error"
echo "Diagnostics:"
echo "  pulumi:pulumi:Stack (alle-staging):"
echo "    error: update failed"
echo ""
echo "  gcp:cloudrunv2:Job (alle-staging-migrate):"
echo "    error: 1 error occurred:" >&2
printf '    \t* Error waiting for execution: migration failed\n' >&2
echo ""
echo "Resources:"
exit 255"""
FAILED_PROGRAM = """cat <<'EOF'
Updating (staging):
    pulumi:pulumi:Stack alle-staging running error: Program failed with an unhandled exception:
    pulumi:pulumi:Stack alle-staging **failed** 1 error
Diagnostics:
  pulumi:pulumi:Stack (alle-staging):
    error: Program failed with an unhandled exception:
    Traceback (most recent call last):
      File "/work/alle/__main__.py", line 12, in <module>
        cfg = config.load()
              ^^^^^^^^^^^^^
    components.config.ConfigError: alle:webMinInstances is '-1'; allowed: 0 to 100

    error: update failed

Resources:
    1 unchanged

Duration: 3s
EOF
exit 255"""


@pytest.mark.parametrize(
    ("up", "error"),
    [
        (
            FAILED_RESOURCE,
            "gcp:cloudrunv2:Job (alle-staging-migrate): error: 1 error occurred: "
            "* Error waiting for execution: migration failed",
        ),
        (
            FAILED_PROGRAM,
            "error: Program failed with an unhandled exception: "
            "components.config.ConfigError: alle:webMinInstances is '-1'; allowed: 0 to 100",
        ),
    ],
    ids=["a resource failed", "the program failed"],
)
def test_a_failed_pulumi_up_is_one_line_naming_its_error_and_the_log_of_all_its_output(
    up: str, error: str, stub_pulumi: StubPulumi, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first error under a resource, with the resource; else the program's own; never Pulumi's summary
    (`error: update failed`), which Pulumi lists first."""
    home = stub_pulumi(up)
    assert cli.main(["migrate", "retry", "--stack", "staging"]) == 1
    err = capsys.readouterr().err
    assert "  pulumi:pulumi:Stack (alle-staging):" in err.splitlines(), "Pulumi's output, streamed"
    [line] = _alle_ops_errors(err)
    [log] = (home / "logs").iterdir()
    assert line == f"alle-ops: pulumi up on stack staging failed (exit 255): {error} (all of its output: {log})"
    assert "error: update failed" in log.read_text()


def test_the_gist_of_a_failed_up_prefers_a_resources_error_to_the_stacks() -> None:
    """A failed registration often fails the program too, and Pulumi lists the Stack first: the resource's error
    says what to fix."""
    output = """Diagnostics:
  pulumi:pulumi:Stack (alle-staging):
    error: Program failed with an unhandled exception:
    Exception: resource alle-staging-pg failed to register

  gcp:sql:DatabaseInstance (alle-staging-pg):
    error: googleapi: Error 409: The instance or operation is not in an appropriate state to handle the request.

    error: update failed
"""
    assert gist(output) == (
        "gcp:sql:DatabaseInstance (alle-staging-pg): error: googleapi: Error 409: The instance or operation is not "
        "in an appropriate state to handle the request."
    )
    assert gist("Resources:\n    1 unchanged\n\nDuration: 3s\n") == "Duration: 3s", "no error: the last line"


def test_a_failed_pulumi_query_is_one_line(stub_pulumi: StubPulumi, capsys: pytest.CaptureFixture[str]) -> None:
    stub_pulumi(
        "exit 0", query='echo "error: no stack named \'staging\' found" >&2; echo "  (see pulumi login)" >&2; exit 255'
    )
    assert cli.main(["traffic", "shift", "--stack", "staging", "--to", "100"]) == 1
    assert capsys.readouterr().err == (
        "alle-ops: `pulumi stack output --json --stack staging` failed: error: no stack named 'staging' found\n"
    )


# alle-ops itself signalled, as an operator's terminal, a CI runner or a dropped SSH session would -------------------


class AlleOps:
    """`alle-ops migrate retry --stack staging` in a process of its own, as a shell runs it: a process group of its
    own (a terminal's foreground job: Ctrl-C is SIGINT to that group), its stderr read line by line as it comes."""

    def __init__(self, home: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ops", "migrate", "retry", "--stack", "staging"],
            cwd=ROOT,
            env={**os.environ, "TMPDIR": str(home / "logs")},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=_signals_as_in_a_terminal,
        )
        self.err: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def until(self, text: str) -> None:
        """Return once alle-ops has written a line holding `text`: what the test does next then happens after it.
        (The bound only ends a test that went wrong.)"""
        while (line := self._lines.get(timeout=60)) is not None:
            self.err.append(line)
            if text in line:
                return
        raise AssertionError(f"alle-ops ended before writing {text!r}: {self.err}")

    def ended(self) -> int:
        code = self.process.wait(60)
        while (line := self._lines.get(timeout=60)) is not None:
            self.err.append(line)
        return code

    def errors(self) -> list[str]:
        return [line for line in self.err if line.startswith("alle-ops")]


def _signals_as_in_a_terminal() -> None:
    """Default dispositions, as a terminal's job has them: a test run in the background may have SIGINT ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.fixture
def alle_ops(stub_pulumi: StubPulumi) -> Iterator[Callable[[str], tuple[Path, AlleOps]]]:
    """Start alle-ops with a stub `pulumi up` running the given shell; whatever is still running at the end (only
    after a failed test) is killed: alle-ops here, the stub by the stub fixture."""
    started: list[AlleOps] = []

    def start(up: str) -> tuple[Path, AlleOps]:
        home = stub_pulumi(up)
        started.append(AlleOps(home))
        return home, started[-1]

    yield start
    for ops in started:
        if ops.process.poll() is None:
            ops.process.kill()
            ops.process.wait()


#: A Pulumi that notes every signal it gets and, at SIGINT, writes its state and exits as Pulumi does.
STOPPABLE = """echo $$ > "$DIR/pulumi.pid"
trap 'echo INT >> "$DIR/signals"; echo "cancelled; state written"; exit 255' INT
trap 'echo TERM >> "$DIR/signals"' TERM
trap 'echo HUP >> "$DIR/signals"' HUP
echo "Updating (staging)"
while :; do sleep 0.05; done"""


def _ctrl_c(process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGINT)  # the terminal signals its foreground process group


@pytest.mark.parametrize(
    ("send", "named"),
    [
        (_ctrl_c, "Ctrl-C"),
        (lambda process: process.send_signal(signal.SIGTERM), "SIGTERM"),
        (lambda process: process.send_signal(signal.SIGHUP), "SIGHUP"),
    ],
    ids=["Ctrl-C", "SIGTERM", "SIGHUP"],
)
def test_a_stop_signal_to_alle_ops_interrupts_pulumi_once_so_it_writes_its_state(
    send: Callable[[subprocess.Popen[str]], None], named: str, alle_ops: Callable[[str], tuple[Path, AlleOps]]
) -> None:
    """SIGTERM (CI, a supervisor) and SIGHUP (a dropped SSH session) used to end alle-ops outright and leave Pulumi
    running with no reader for its output; they now stop it as Ctrl-C does: one SIGINT, and it writes its state.
    Pulumi gets nothing else: not the terminal's Ctrl-C as a second, forcing one, nor alle-ops' own signal."""
    home, ops = alle_ops(STOPPABLE)
    ops.until("Updating (staging)")
    pulumi = int((home / "pulumi.pid").read_text())
    assert os.getsid(pulumi) == pulumi != os.getsid(ops.process.pid), "a session of its own: Ctrl-C is not for it"
    send(ops.process)
    assert ops.ended() == 1
    assert (home / "signals").read_text() == "INT\n"
    assert "cancelled; state written" in ops.err, "Pulumi's last lines, still streamed"
    [log] = (home / "logs").iterdir()
    assert ops.errors() == [
        f"alle-ops: pulumi up on stack staging was interrupted ({named}); stopped with SIGINT, it wrote its state. "
        f"See what it was waiting on in {log}, then run the command again"
    ]


def test_a_second_signal_while_pulumi_stops_kills_it_at_once(alle_ops: Callable[[str], tuple[Path, AlleOps]]) -> None:
    """The operator who signals again will not wait out the grace period (120 s here): Pulumi and its group are
    killed at once, and the error says how to release the lock and settle what was pending."""
    home, ops = alle_ops(
        'echo $$ > "$DIR/pulumi.pid"\n'
        'trap \'echo INT >> "$DIR/signals"; echo "stopping: waiting for the operations in flight"\' INT\n'
        'echo "Updating (staging)"\nwhile :; do sleep 0.05; done'
    )
    ops.until("Updating (staging)")
    ops.process.send_signal(signal.SIGTERM)
    ops.until("stopping: waiting for the operations in flight")
    _ctrl_c(ops.process)
    assert ops.ended() == 1
    assert (home / "signals").read_text() == "INT\n", "one SIGINT; the second signal was the kill"
    with pytest.raises(ProcessLookupError):
        os.kill(int((home / "pulumi.pid").read_text()), 0)
    [log] = (home / "logs").iterdir()
    assert ops.errors() == [
        "alle-ops: pulumi up on stack staging was interrupted (SIGTERM), was killed at a second signal (Ctrl-C) "
        "while it stopped. The state keeps the update's lock and may list operations left pending: run "
        "`pulumi cancel --stack staging` (removes the stale lock), then `pulumi refresh --stack staging` and resolve "
        f"the pending operations it reports, before the next up. Output: {log}"
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_pulumi_is_interrupted_and_goes_on_writing_its_log_when_alle_ops_is_killed_outright(
    alle_ops: Callable[[str], tuple[Path, AlleOps]],
) -> None:
    """SIGKILL leaves alle-ops no say. The kernel sends Pulumi SIGINT as alle-ops dies, so it stops as at Ctrl-C
    instead of running on unsupervised; and it writes to the log file, not to a pipe nobody reads any more, so its
    writes do not fail halfway through its state. It says it is done through a FIFO the test reads."""
    home, ops = alle_ops(
        'echo $$ > "$DIR/pulumi.pid"\n'
        "trap '"
        'echo INT >> "$DIR/signals"; i=0\n'
        'while [ $i -lt 100 ]; do echo "writing state $i" || echo FAILED >> "$DIR/signals"; i=$((i + 1)); done\n'
        'echo "cancelled; state written"; echo done > "$DIR/done"; exit 255'
        "' INT\n"
        'echo "Updating (staging)"\nwhile :; do sleep 0.05; done'
    )
    os.mkfifo(home / "done")
    done = os.open(home / "done", os.O_RDONLY | os.O_NONBLOCK)  # a reader, so the stub's write does not wait
    try:
        ops.until("Updating (staging)")
        ops.process.kill()
        assert ops.ended() == -signal.SIGKILL
        readable, _, _ = select.select([done], [], [], 60)
        assert readable and os.read(done, 16) == b"done\n", "Pulumi finished after alle-ops was gone"
    finally:
        os.close(done)
    assert (home / "signals").read_text() == "INT\n", "SIGINT, once, and no failed write"
    [log] = (home / "logs").iterdir()
    assert log.read_text().endswith("writing state 99\ncancelled; state written\n")
