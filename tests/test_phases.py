"""bin/test's phases (bin/lib/phases.sh): a failure anywhere stops the run at once, and a stop, by a failure or a
signal, interrupts every job as Ctrl-C would and leaves nothing running.

Each test runs a small script that sources the library, with jobs that are Python processes: one that gets SIGINT
with its default action raises KeyboardInterrupt and says so. Every ordering is shown by what a job wrote (a file
it creates once running, a line the runner prints once stopping), not by sleeps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ops.graph import ROOT

#: Long enough that a job still running at the end of a test is one the library failed to stop.
LONG = 60


@dataclass
class Runner:
    """A script using bin/lib/phases.sh, run in a session of its own as bin/test would be."""

    popen: subprocess.Popen[bytes]
    output: Path
    marker: str
    #: Where each job creates a file named after it once it runs.
    started: Path

    def text(self) -> str:
        return self.output.read_text()

    def until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if done():
                return
            if self.popen.poll() is not None:
                raise AssertionError(f"the runner exited before {what}:\n{self.text()}")
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}:\n{self.text()}")

    def wait_started(self, *names: str) -> None:
        self.until(lambda: all((self.started / name).exists() for name in names), f"{', '.join(names)} to start")

    def left_running(self) -> dict[int, str]:
        """This test's jobs that are still alive: pid and command line."""
        found = {}
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if self.marker in cmdline and state != "Z":
                found[int(proc.name)] = cmdline.replace("\0", " ")
        return found


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[[str], Runner]]:
    runners: list[Runner] = []

    def start(scenario: str) -> Runner:
        marker = f"phases-test-{uuid.uuid4().hex}"
        started = tmp_path / "started"
        started.mkdir(exist_ok=True)
        output = tmp_path / "output.txt"
        script = f"set -euo pipefail\nset +m\nsource {ROOT / 'bin/lib/phases.sh'}\n" + textwrap.dedent(scenario)
        script = script.replace("MARKER", marker).replace("STARTED", str(started))
        with output.open("wb") as sink:
            popen = subprocess.Popen(
                ["env", "--default-signal=INT,QUIT", "bash", "-c", script],
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        runner = Runner(popen, output, marker, started)
        runners.append(runner)
        return runner

    yield start
    for runner in runners:  # after a failure: nothing of it may run on beside the next tests
        if runner.popen.poll() is None:
            runner.popen.kill()
            runner.popen.wait()
        for leftover in runner.left_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)


def job(name: str, *, ignore_sigint: bool = False) -> str:
    """A Python job that marks itself started, sleeps, and reports a KeyboardInterrupt."""
    ignore = "signal.signal(signal.SIGINT, signal.SIG_IGN); " if ignore_sigint else ""
    code = (
        f"import pathlib, signal, time; {ignore}\n"
        f"try:\n    pathlib.Path('STARTED/{name}').touch()\n    time.sleep({LONG})\n"
        f"except KeyboardInterrupt:\n    print('interrupted {name}', flush=True)\n"
        "    raise SystemExit(2)\n"
        "# MARKER"
    )
    return f"python3 -c {_quote(code)}"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_a_passing_run_shows_each_background_phase_once_and_times_every_phase(run: Callable[[str], Runner]) -> None:
    runner = run(
        """
        alongside "side" bash -c 'echo from-the-side'
        phase "front" bash -c 'echo from-the-front'
        joined "side"
        """
    )
    assert runner.popen.wait(20) == 0, runner.text()
    text = runner.text()
    assert text.count("from-the-side") == 1
    assert "== side (ran in the background)" in text
    times = text.split("== phase times", 1)[1]
    assert "side " in times and "front " in times and "FAILED" not in times


#: A background phase that fails once the front phase and another background one run.
FAIL_ONCE_BOTH_RUN = "until [ -e STARTED/front ] && [ -e STARTED/slow ]; do sleep 0.02; done; exit 3 # MARKER"


def test_a_background_failure_stops_the_run_at_once_with_what_still_runs(run: Callable[[str], Runner]) -> None:
    runner = run(
        f"""
        alongside "slow" {job("slow")}
        alongside "fails" bash -c '{FAIL_ONCE_BOTH_RUN}'
        phase "front" {job("front")}
        joined "slow"
        joined "fails"
        """
    )
    # Long before the front phase or the slow one would end on their own.
    assert runner.popen.wait(20) == 3, runner.text()
    text = runner.text()
    assert "fails                    FAILED (exit 3)" in text
    assert "interrupted front" in text  # SIGINT reached it with its default action
    assert "== slow (stopped)" in text and "interrupted slow" in text
    assert runner.left_running() == {}


def test_sigterm_to_the_runner_interrupts_every_job_as_ctrl_c_would_and_says_which_phase_it_stopped(
    run: Callable[[str], Runner],
) -> None:
    runner = run(
        f"""
        alongside "side" {job("side")}
        phase "front" {job("front")}
        joined "side"
        """
    )
    runner.wait_started("side", "front")
    runner.popen.send_signal(signal.SIGTERM)
    assert runner.popen.wait(20) == 128 + signal.SIGTERM, runner.text()
    text = runner.text()
    assert "interrupted front" in text and "interrupted side" in text
    assert "front                    stopped by SIGTERM" in text
    assert runner.left_running() == {}


def test_a_second_signal_kills_at_once_what_the_first_did_not_stop(run: Callable[[str], Runner]) -> None:
    """The stop waits 30 s for a job that ignores SIGINT; a second signal cuts that short."""
    runner = run(
        f"""
        alongside "stubborn" {job("stubborn", ignore_sigint=True)}
        phase "front" {job("front")}
        joined "stubborn"
        """
    )
    runner.wait_started("stubborn", "front")
    runner.popen.send_signal(signal.SIGINT)
    runner.until(lambda: "== stopping" in runner.text(), "the runner to start stopping")
    runner.popen.send_signal(signal.SIGINT)
    assert runner.popen.wait(20) == 128 + signal.SIGINT, runner.text()
    assert "== stubborn (stopped)" in runner.text()
    assert runner.left_running() == {}


def test_a_failure_while_the_run_waits_on_another_background_phase_stops_the_run_without_waiting_for_that_one(
    run: Callable[[str], Runner],
) -> None:
    runner = run(
        f"""
        alongside "slow" {job("slow")}
        alongside "fails" bash -c 'until [ -e STARTED/slow ]; do sleep 0.02; done; exit 3 # MARKER'
        phase "front" true
        joined "slow"
        joined "fails"
        """
    )
    assert runner.popen.wait(20) == 3, runner.text()
    assert "fails                    FAILED (exit 3)" in runner.text()
    assert runner.left_running() == {}


def test_a_background_failure_during_a_function_phase_stops_the_run_before_the_next_phase(
    run: Callable[[str], Runner],
) -> None:
    runner = run(
        f"""
        in_the_foreground() {{ while [ ! -e STARTED/failed ] || running fails; do sleep 0.02; done; }}
        alongside "fails" bash -c 'touch STARTED/failed; exit 3'
        phase "function" in_the_foreground
        phase "next" {job("next")}
        """
    )
    assert runner.popen.wait(20) == 3, runner.text()
    assert "fails                    FAILED (exit 3)" in runner.text()
    assert "== next" not in runner.text()


def test_a_signal_while_the_run_waits_on_a_background_phase_names_that_phase(run: Callable[[str], Runner]) -> None:
    runner = run(
        f"""
        alongside "side" {job("side")}
        joined "side"
        """
    )
    runner.wait_started("side")
    runner.popen.send_signal(signal.SIGTERM)
    assert runner.popen.wait(20) == 128 + signal.SIGTERM, runner.text()
    assert "side                     stopped by SIGTERM" in runner.text()
    assert runner.left_running() == {}
