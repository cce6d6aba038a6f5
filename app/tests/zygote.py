"""A fork server for the tests' `alle` processes: it imports alle once, then forks a child per start.

Every `alle` start spends about 1.2 s of CPU importing FastAPI, pydantic, psycopg and redis before it reads its
configuration; the app's tests start about a hundred. Here one process per xdist worker imports them, and each
start is a fork of it that then does what `venv/bin/alle` does: reads `sys.argv` and the environment the test
gave it, and runs `alle.cli.main`, in a session of its own, its stdin, stdout and stderr the test's (passed over
the socket), its working directory the test's. The child is a real process: the test signals it by pid, kills its
process group, and reads its exit status (a number, or minus the signal) as `subprocess.Popen` reports it.

What a fork cannot reproduce is start-up itself: imports ran earlier, in the server, under its environment, and
so did any warning they print. Tests about that start a fresh interpreter (conftest's `spawn(..., fresh=True)`).

Protocol, one connection per start: the test sends a JSON request (argv, env, cwd) with its three stdio fds; the
server answers the child's pid on one line, then its exit status on another once it has exited. The child stays
unreaped (a zombie, as under Popen) until the test has read that status and hung up, so its pid and process group
are never reused while the test may still signal them.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

#: Imported once in the server: everything `alle web`, `alle worker` and the admin commands import on their way.
PRELOAD = (
    "alle.cli",
    "alle.api.app",
    "alle.worker",
    "alle.migrate",
    "alle.admin",
    "alle.jobs",
    "alle.db",
    "uvicorn",
    "uvicorn.supervisors",
    "uvicorn.lifespan.on",
    "uvicorn.loops.auto",
    "uvicorn.protocols.http.auto",
    "anyio._backends._asyncio",
    # Imported on first use in the app (alle/storage.py), and so in every forked web, worker and admin command that
    # touches a bucket: about 0.25 s of CPU each, some thirty times a run.
    "google.cloud.storage",
    "google.cloud.storage.retry",
    "google.api_core.exceptions",
)


def serve(path: str) -> None:
    """Accept starts on the unix socket at `path` until stdin closes. Returns only in a forked child."""
    import importlib
    import warnings

    from alle.logs import quiet_known_warnings

    # The filter each alle process sets before its first use of storage, here only while importing: a forked
    # child starts with the warning filters a fresh interpreter has.
    with warnings.catch_warnings():
        quiet_known_warnings()
        for name in PRELOAD:
            importlib.import_module(name)
    assert threading.active_count() == 1, "a thread started on import would be missing from every forked child"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    #: pidfd of each running child -> (its pid, the test's connection); then the connection -> the pid to reap.
    running: dict[int, tuple[int, socket.socket]] = {}
    exited: dict[socket.socket, int] = {}
    while True:
        for key, _ in selector.select():
            if key.fileobj is sys.stdin:
                sys.exit(0)
            elif key.fileobj is listener:
                connection, _ = listener.accept()
                message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
                # The pid is answered once the child has its session, stdio, directory and environment, as
                # Popen returns only once its child has: a test may signal its process group at once.
                set_up, setting_up = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(set_up)
                    for pidfd, (_, other) in running.items():
                        os.close(pidfd)
                        other.close()
                    for other in exited:
                        other.close()
                    selector.close()
                    listener.close()
                    connection.close()
                    try:
                        _become(json.loads(message), fds)
                    except OSError as error:  # e.g. a working directory that does not exist, as Popen raises it
                        os.write(setting_up, f"{type(error).__name__}: {error}".encode())
                        os._exit(127)
                    os.close(setting_up)
                    return
                os.close(setting_up)
                failure = os.read(set_up, 1 << 16).decode()
                os.close(set_up)
                for fd in fds:
                    os.close(fd)
                connection.sendall(f"!{failure}\n".encode() if failure else f"{pid}\n".encode())
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, connection)
                selector.register(pidfd, selectors.EVENT_READ)
            elif key.fd in running:
                pid, connection = running.pop(key.fd)
                selector.unregister(key.fd)
                status = os.waitid(os.P_PIDFD, key.fd, os.WEXITED | os.WNOWAIT)
                os.close(key.fd)
                assert status is not None
                code = status.si_status if status.si_code == os.CLD_EXITED else -status.si_status
                with contextlib.suppress(OSError):  # the test is gone; the child is reaped below all the same
                    connection.sendall(f"{code}\n".encode())
                exited[connection] = pid
                selector.register(connection, selectors.EVENT_READ)
            else:
                [connection] = [c for c in exited if c.fileno() == key.fd]
                selector.unregister(connection)
                os.waitpid(exited.pop(connection), 0)
                connection.close()


def _become(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: take the test's session, stdio, directory and environment, as Popen's child would."""
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["executable"], *request["argv"]]
    sys.path[0] = str(Path(request["executable"]).parent)  # as for venv/bin/alle: its directory, not app/tests


class Forked:
    """The test's handle on a forked `alle`: what the tests use of `subprocess.Popen`, with the same meanings."""

    def __init__(self, args: list[str], connection: socket.socket, log: Path) -> None:
        self.args = args
        self._connection = connection
        self._log = log
        self._received = b""
        answer = self._line(block=True) or ""
        if answer.startswith("!"):
            connection.close()
            raise OSError(f"`{' '.join(args)}` could not start: {answer[1:]}")
        self.pid = int(answer)
        self.returncode: int | None = None

    def _line(self, *, block: bool, timeout: float | None = None) -> str | None:
        while b"\n" not in self._received:
            self._connection.settimeout(timeout if block else 0)
            try:
                chunk = self._connection.recv(64)
            except (BlockingIOError, TimeoutError):
                return None
            if not chunk:
                raise RuntimeError(f"the fork server hung up on `{' '.join(self.args)}`; {self._log} says why")
            self._received += chunk
        line, _, self._received = self._received.partition(b"\n")
        return line.decode()

    def _settle(self, line: str | None) -> int | None:
        if line is not None:
            self.returncode = int(line)
            self._connection.close()  # the server reaps the child now
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            return self._settle(self._line(block=False))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and self._settle(self._line(block=True, timeout=timeout)) is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Captured(Forked):
    """A forked `alle` whose stdout and stderr are pipes to the test: `communicate` as in `subprocess.Popen`."""

    def __init__(self, args: list[str], connection: socket.socket, log: Path, stdout: int, stderr: int | None) -> None:
        super().__init__(args, connection, log)
        self._pipes = {fd: bytearray() for fd in (stdout, stderr) if fd is not None}
        self._stdout, self._stderr = stdout, stderr

    def communicate(self, timeout: float | None = None) -> tuple[str, str | None]:
        """Read until the child closes its output (text, like `text=True`), then wait for its exit status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for fd in self._pipes:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                ready = selector.select(left)
                if not ready:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                for key, _ in ready:
                    chunk = os.read(key.fd, 1 << 16)
                    if chunk:
                        self._pipes[key.fd] += chunk
                    else:
                        selector.unregister(key.fd)
                        os.close(key.fd)
        self.wait(None if deadline is None else max(deadline - time.monotonic(), 0))
        stderr = None if self._stderr is None else self._pipes[self._stderr].decode()
        return self._pipes[self._stdout].decode(), stderr


def _read_at_start(name: str) -> bool:
    """Read by the interpreter or the C library as a process starts."""
    return name.startswith(("PYTHON", "LC_")) or name in ("LANG", "LANGUAGE", "TZ")


class Zygote:
    """The fork server for this test process, started at the first start and stopped by `close`."""

    def __init__(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="zygote-"))  # a unix socket path must stay under ~100 bytes
        self._path = str(self._root / "socket")
        self._log = self._root / "server.log"
        self._executable = str(Path(sys.executable).with_name("alle"))
        self._lock = threading.Lock()
        self._server: subprocess.Popen[bytes] | None = None

    def _started(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            with self._log.open("wb") as log:
                # A session of its own: a Ctrl-C to the test run's process group must not take the server down
                # before the tests' teardown has killed what it forked. It exits when this process's end of its
                # stdin closes, however this process ends.
                self._server = subprocess.Popen(
                    [sys.executable, __file__, self._path],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env={"PATH": os.environ["PATH"], "HOME": str(self._root)},
                    cwd=self._root,
                    start_new_session=True,
                )
            assert self._server.stdout is not None
            if self._server.stdout.readline() != b"ready\n":
                raise RuntimeError(f"the fork server did not start:\n{self._log.read_text()}")

    def start(self, argv: list[str], env: dict[str, str], cwd: Path, stdio: tuple[int, int, int]) -> Forked:
        """`alle ARGV`, forked, with `stdio` (stdin, stdout, stderr fds) as its own; returns at once."""
        return Forked(["alle", *argv], self._request(argv, env, cwd, stdio), self._log)

    def _request(self, argv: list[str], env: dict[str, str], cwd: Path, stdio: tuple[int, int, int]) -> socket.socket:
        # The server started without any of them, and a forked child has what the server had.
        given = sorted(name for name in env if _read_at_start(name))
        if given:
            raise ValueError(
                f"{', '.join(given)} take effect only as an interpreter starts, and a forked `alle` does not start "
                "one: spawn it with fresh=True"
            )
        self._started()
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(self._path)
        request = {"argv": argv, "env": env, "cwd": str(cwd), "executable": self._executable}
        socket.send_fds(connection, [json.dumps(request).encode()], list(stdio))
        return connection

    def captured(self, argv: list[str], env: dict[str, str], cwd: Path, *, merged: bool = False) -> Captured:
        """`alle ARGV` forked with pipes for its stdout and stderr (one pipe for both if `merged`), stdin empty."""
        out_read, out_write = os.pipe()
        err_read, err_write = (None, out_write) if merged else os.pipe()
        with open(os.devnull, "rb") as nothing:
            connection = self._request(argv, env, cwd, (nothing.fileno(), out_write, err_write))
        os.close(out_write)
        if err_read is not None:
            os.close(err_write)
        return Captured(["alle", *argv], connection, self._log, out_read, err_read)

    def run(self, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
        """`subprocess.run(["alle", *argv], capture_output=True, text=True)`, forked."""
        forked = self.captured(argv, env, cwd)
        stdout, stderr = forked.communicate()
        return subprocess.CompletedProcess(forked.args, forked.wait(), stdout, stderr)

    def close(self) -> None:
        if self._server is not None:
            assert self._server.stdin is not None
            self._server.stdin.close()
            self._server.wait(30)
        for child in self._root.iterdir():
            child.unlink()
        self._root.rmdir()


if __name__ == "__main__":
    # Like venv/bin/alle, in each forked child: the server itself never gets past serve().
    serve(sys.argv[1])
    from alle.cli import main

    main()
