"""`bin/run-local` supervises what it starts: a stop signal to its PID alone, or a crashed child, stops it all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import backing
import procfs
from procfs import alive, processes_with_cwd_under

RUN = Path(__file__).resolve().parent.parent / "dev" / "run.py"
#: Starting PostgreSQL, migrating and starting web can take a while on a loaded 2-core machine.
START_TIMEOUT = 180


class RunLocal:
    """`app/dev/run.py` (what bin/run-local execs) in its own session, its output collected line by line."""

    def __init__(self, data_dir: Path, port: int, *, cwd: Path | None = None) -> None:
        """Given `cwd`, it runs there, and is given the data directory relative to it."""
        self.data_dir = data_dir
        self.port = port
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.popen = subprocess.Popen(
            [sys.executable, str(RUN), "--data-dir", str(data_dir.relative_to(cwd) if cwd else data_dir)],
            cwd=cwd,
            env={**os.environ, "PORT": str(port), "SHUTDOWN_GRACE_SECONDS": "3"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # no terminal, no process group: signals reach only what the test sends them to
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<EOF>")
            self._changed.notify_all()

    def wait_line(self, pattern: str) -> re.Match[str]:
        """The first line matching `pattern`; fails if the output ends or stalls without one."""
        regex = re.compile(pattern)
        with self._changed:
            for _ in range(10_000):
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                if self.lines and self.lines[-1] == "<EOF>":
                    break
                if not self._changed.wait(START_TIMEOUT):
                    break
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))

    def pid(self, name: str) -> int:
        return int(self.wait_line(rf"^run-local \| {name} started: .* \(pid (\d+)\)$").group(1))

    def finish(self) -> int:
        code = self.popen.wait(120)
        self._reader.join()
        return code

    def index(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return next(i for i, line in enumerate(self.lines) if regex.search(line))


@pytest.fixture
def run_local(tmp_path: Path) -> Iterator[RunLocal]:
    started = RunLocal(tmp_path / "local", backing.free_port())
    yield started
    stop(started)


def stop(started: RunLocal) -> None:
    """What a test left running, killed."""
    if started.popen.poll() is None:
        # Its web and worker first: they run from the checkout, not the data directory, and a supervisor killed
        # outright leaves them running (a test that failed on a hung supervisor once left both behind).
        for pid in procfs.children(started.popen.pid):
            os.kill(pid, signal.SIGKILL)
        started.popen.kill()
        started.popen.wait()
    for pid in processes_with_cwd_under(started.data_dir):
        os.kill(pid, signal.SIGKILL)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize(
    ("signum", "to_a_thread"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGTERM, True)],
    ids=["SIGTERM", "SIGINT", "SIGTERM-taken-by-another-thread"],
)
def test_stop_signal_to_its_pid_stops_web_worker_then_backing_services_and_exits_zero(
    run_local: RunLocal, signum: signal.Signals, to_a_thread: bool
) -> None:
    """The kernel offers a signal for the process to its main thread first, but one sent to another thread's id goes
    to that thread (as does one that comes while the main thread cannot take it): to a log reader or the storage
    emulator's thread, say, and its Python handler then waits until the main thread runs Python again."""
    web, worker = run_local.pid("web"), run_local.pid("worker")
    run_local.wait_line(r"Alle is running: http://127\.0\.0\.1:\d+$")
    assert listening(run_local.port), "the banner came before web listened"
    backing_pids = processes_with_cwd_under(run_local.data_dir)
    assert len(backing_pids) >= 2, "PostgreSQL and Redis should be running from the data directory"

    pid = run_local.popen.pid
    os.kill(next(tid for tid in procfs.threads(pid) if tid != pid) if to_a_thread else pid, signum)

    assert run_local.finish() == 0, "\n".join(run_local.lines)
    order = [
        run_local.index(r"^web +\| .*web stopped; pools closed"),
        run_local.index(r"^worker +\| .*\"worker stopped\""),
        run_local.index(r"^run-local \| Redis stopped$"),
        run_local.index(r"^run-local \| PostgreSQL stopped$"),
    ]
    assert order == sorted(order), "\n".join(run_local.lines)
    assert not alive(web) and not alive(worker)
    assert [pid for pid in backing_pids if alive(pid)] == []
    assert not (run_local.data_dir / "postgres" / "postmaster.pid").exists()


def test_web_listens_on_this_machine_only_and_a_crashed_child_stops_the_rest_and_exits_nonzero(
    run_local: RunLocal,
) -> None:
    web, worker = run_local.pid("web"), run_local.pid("worker")
    run_local.wait_line(r"Alle is running: http://127\.0\.0\.1:")
    assert procfs.listening_addresses(run_local.port) == {"127.0.0.1"}, "a developer's web is not the network's"
    backing_pids = processes_with_cwd_under(run_local.data_dir)

    os.kill(worker, signal.SIGKILL)

    assert run_local.finish() == 1
    run_local.wait_line(r"^run-local \| worker exited on its own \(signal SIGKILL\) while running; stopping the rest$")
    run_local.wait_line(r"^web +\| .*web stopped; pools closed")
    assert not alive(web)
    assert [pid for pid in backing_pids if alive(pid)] == []


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - a program that holds the port on every address
        taken.listen()
        run_local = RunLocal(tmp_path / "local", taken.getsockname()[1])
        code = run_local.finish()
    assert code == 1
    run_local.wait_line(rf"^run-local \| port {run_local.port} is in use; .* PORT=8081 bin/run-local$")
    assert not any("Alle is running" in line for line in run_local.lines)
    assert not (tmp_path / "local").exists(), "backing services started although web could not"


def test_a_data_directory_in_use_by_another_run_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """A second run on the same directory shared the first one's PostgreSQL and Redis, and stopped them when it
    stopped: the first then served `degraded`, its worker failing on the vanished Redis socket."""
    data_dir = tmp_path / "local"
    held = backing.claim(data_dir)  # as the first run holds it
    assert held is not None
    with held:
        run_local = RunLocal(data_dir, backing.free_port())
        try:
            code = run_local.popen.wait(START_TIMEOUT)
        finally:
            if run_local.popen.poll() is None:  # it went on to start everything: stopped as the fixture does
                for pid in [*procfs.children(run_local.popen.pid), run_local.popen.pid]:
                    os.kill(pid, signal.SIGKILL)
                for pid in processes_with_cwd_under(data_dir):
                    os.kill(pid, signal.SIGKILL)
        run_local.finish()
    assert code == 1
    run_local.wait_line(rf"^run-local \| {data_dir} is in use by another bin/run-local; .* --data-dir \.local-\d+$")
    assert sorted(path.name for path in data_dir.iterdir()) == ["run-local.lock"], "backing services started"


def test_a_relative_data_directory_is_taken_from_the_current_directory(tmp_path: Path) -> None:
    """As the README and the "in use" message write it: `PORT=8081 bin/run-local --data-dir .local-8081`. The
    storage emulator refused the relative path, and the run ended with a traceback before web started."""
    run_local = RunLocal(tmp_path / ".local-rel", backing.free_port(), cwd=tmp_path)
    try:
        kept = run_local.wait_line(r"^run-local \| Ctrl-C stops everything\. Data stays in (.*); ").group(1)
        assert kept == str(tmp_path / ".local-rel"), "the banner gives the data directory in full"
        os.kill(run_local.popen.pid, signal.SIGTERM)
        assert run_local.finish() == 0, "\n".join(run_local.lines)
    finally:
        stop(run_local)
    assert {"postgres", "storage", "redis.rdb"} <= {path.name for path in (tmp_path / ".local-rel").iterdir()}
