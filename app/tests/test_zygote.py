"""The fork server behind `spawn` and `forked_alle` (zygote.py): what a test gets from it is what exec'ing `alle`
would give, in every respect the tests look at: output, exit status, signals, session, environment, directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from conftest import OFFLINE_ENV, ForkedAlle, Spawn, wait_for


def test_a_forked_alle_exits_and_writes_exactly_as_an_execd_one(forked_alle: ForkedAlle, workdir: Path) -> None:
    env = {"PATH": os.environ["PATH"], **OFFLINE_ENV}
    for argv in (["cleanup-old-tasks", "--older-than-days", "0"], ["no-such-command"], ["--help"]):
        forked = forked_alle(env, *argv)
        execd = subprocess.run(["alle", *argv], env=env, cwd=workdir, capture_output=True, text=True, check=False)
        assert (forked.returncode, forked.stdout, forked.stderr) == (execd.returncode, execd.stdout, execd.stderr)


def test_a_forked_alle_leads_its_own_session_and_a_signal_that_kills_it_is_its_status(spawn: Spawn) -> None:
    worker = spawn("worker")
    assert os.getsid(worker.popen.pid) == os.getpgid(worker.popen.pid) == worker.popen.pid
    os.killpg(worker.popen.pid, signal.SIGKILL)
    assert worker.popen.wait(10) == -signal.SIGKILL
    assert worker.popen.poll() == -signal.SIGKILL


def test_a_forked_alle_reads_the_tests_environment_and_runs_in_its_directory(spawn: Spawn, workdir: Path) -> None:
    web = spawn("web", {"RELEASE": "forked-release"})
    assert Path(f"/proc/{web.popen.pid}/cwd").readlink() == workdir
    wait_for(lambda: '"web started"' in web.output(), what="the start line", proc=web)
    [started] = [json.loads(line) for line in web.output().splitlines() if '"web started"' in line]
    assert started["release"] == "forked-release"
    assert web.terminate() == 0
