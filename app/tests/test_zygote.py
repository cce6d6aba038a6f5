"""The fork server behind `spawn` and `forked_alle` (zygote.py): what a test gets from it is what exec'ing `alle`
would give, in every respect the tests look at: output, exit status, signals, session, environment, directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import backing
from conftest import OFFLINE_ENV, ForkedAlle, Spawn, wait_for
from zygote import PRELOAD, Zygote


def test_a_forked_alle_exits_and_writes_exactly_as_an_execd_one(forked_alle: ForkedAlle, workdir: Path) -> None:
    env = {"PATH": os.environ["PATH"], **OFFLINE_ENV}
    for argv in (["cleanup-old-tasks", "--older-than-days", "0"], ["no-such-command"], ["--help"]):
        forked = forked_alle(env, *argv)
        execd = subprocess.run([backing.ALLE, *argv], env=env, cwd=workdir, capture_output=True, text=True, check=False)
        assert (forked.returncode, forked.stdout, forked.stderr) == (execd.returncode, execd.stdout, execd.stderr)
    # A start refused for its config (test_config.py forks these): the same line, but for the time in it.
    unset = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    forked = forked_alle(unset, "web")
    execd = subprocess.run([backing.ALLE, "web"], env=unset, cwd=workdir, capture_output=True, text=True, check=False)
    assert forked.returncode == execd.returncode == 2
    lines = [{**json.loads(line), "time": None} for line in (forked.stdout, execd.stdout)]
    assert lines[0] == lines[1], (forked.stdout, execd.stdout)
    assert forked.stderr == execd.stderr == ""


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


@pytest.mark.parametrize("module", [name for name in PRELOAD if name.startswith("alle.")])
def test_each_module_the_fork_server_preloads_imports_on_its_own(module: str) -> None:
    """The server imports them all, in one order: a module that imports only after another one (a circular import,
    a submodule used but not imported) would pass every test of a forked `alle`."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_a_variable_read_only_as_an_interpreter_starts_cannot_be_given_to_a_forked_alle(
    zygote: Zygote, workdir: Path
) -> None:
    with pytest.raises(ValueError, match="PYTHONHASHSEED take effect only as an interpreter starts"):
        zygote.run(["--help"], {"PATH": os.environ["PATH"], "PYTHONHASHSEED": "7"}, workdir)
