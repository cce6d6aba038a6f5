"""Run the release locally: embedded backing services, `alle migrate`, then the Procfile's process types.

This process supervises its children. A stop signal to it alone (Ctrl-C in a terminal, SIGTERM from a
supervisor or an IDE) stops web, then worker, then the backing services, prints each child's output to its
last line and exits 0. A child that exits on its own stops the rest, says so, and the exit status is 1.
Each child runs in its own session, so a terminal's Ctrl-C reaches only this process and the order holds.
"""

from __future__ import annotations

import argparse
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from honcho.environ import parse_procfile

import backing

APP = Path(__file__).resolve().parent.parent
ROOT = APP.parent
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Seconds a child gets after SIGTERM beyond its own drain time (alle's SHUTDOWN_GRACE_SECONDS) before SIGKILL.
KILL_AFTER = 5
#: Where web listens (WEB_HOST), and the banner points: this machine only, not its network, unlike Cloud Run's web.
LOOPBACK = "127.0.0.1"


class Console:
    """One writer for every child's lines, prefixed with its name, and for this supervisor's own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        with self._lock:
            sys.stdout.write(f"{name:10}| {text}\n")
            sys.stdout.flush()

    def say(self, text: str) -> None:
        self.line("run-local", text)

    def copy(self, name: str, stream: IO[str]) -> None:
        """Every line of a child's output, prefixed with its name, until the child closes it."""
        for text in stream:
            self.line(name, text.rstrip("\n"))


@dataclass
class Exited:
    child: Child


@dataclass
class Signalled:
    signum: int


Event = Exited | Signalled


@dataclass
class Child:
    """A process type running in its own session; its output is copied line by line until it closes."""

    name: str
    popen: subprocess.Popen[str]
    reader: threading.Thread = field(init=False)

    @classmethod
    def spawn(
        cls, name: str, command: str, env: dict[str, str], console: Console, events: queue.SimpleQueue[Event]
    ) -> Child:
        popen = subprocess.Popen(
            shlex.split(command),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        child = cls(name, popen)
        child.reader = threading.Thread(target=child._copy, args=(popen.stdout, console, events), daemon=True)
        child.reader.start()
        console.say(f"{name} started: {command} (pid {popen.pid})")
        return child

    def _copy(self, stream: IO[str], console: Console, events: queue.SimpleQueue[Event]) -> None:
        console.copy(self.name, stream)
        self.popen.wait()
        events.put(Exited(self))

    def status(self) -> str:
        code = self.popen.returncode
        return f"status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"

    def stop(self, grace: float, console: Console) -> None:
        """SIGTERM, wait for the child to drain, SIGKILL if it does not; its output is copied to the end."""
        if self.popen.poll() is None:
            console.say(f"stopping {self.name} (SIGTERM)")
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace + KILL_AFTER)
            except subprocess.TimeoutExpired:
                console.say(f"{self.name} did not stop within {grace + KILL_AFTER:.0f} s; killing it")
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.reader.join()
        console.say(f"{self.name} stopped ({self.status()})")


def port_free(port: int) -> bool:
    """Whether web could bind the port, asked the way uvicorn binds it (SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def listening(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def banner(port: int, data_dir: Path) -> list[str]:
    """What the newcomer needs once web answers: where to point a browser, and how to stop or reset."""
    url = f"http://{LOOPBACK}:{port}"
    return [
        f"Alle is running: {url}",
        f"Web client:      {url}/  (the API is under {url}/v1)",
        f"API docs:        {url}/docs",
        f"Health:          {url}/healthz, readiness {url}/readyz",
        'Mail is not sent locally: the worker logs each message (lines with "message": "mail").',
        f"Ctrl-C stops everything. Data stays in {data_dir}; delete that directory to start afresh.",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bin/run-local", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--image",
        action="store_true",
        help="run the release from the built image instead, as Cloud Run runs it, on the data of .local/ "
        "(needs podman, runc and debootstrap; app/dev/image.py)",
    )
    where.add_argument(
        "--data-dir",
        type=lambda path: Path(path).resolve(),  # from the current directory, once, for every use and message
        default=ROOT / ".local",
        help="where PostgreSQL, Redis and the storage emulator keep their data (default: .local/)",
    )
    return parser.parse_args(argv)


class Supervisor:
    """Starts everything, waits for the first event that ends the run, then stops everything in order."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.children: list[Child] = []
        self.services: backing.Backing | None = None
        self.lock: IO[str] | None = None
        self.port = int(os.environ.get("PORT", "8080"))
        self.grace = float(os.environ.get("SHUTDOWN_GRACE_SECONDS", "8"))

    def on_signal(self, signum: int, _: object) -> None:
        self.events.put(Signalled(signum))  # SimpleQueue.put is safe to call from a signal handler

    def next_event(self) -> Event:
        """Waits in short steps. The kernel may hand a signal to another thread (a log reader, the storage
        emulator's); its handler then runs only once this thread runs Python again, and a wait without end would
        never see it."""
        while True:
            try:
                return self.events.get(timeout=0.5)
            except queue.Empty:
                continue

    def run(self) -> int:
        if not port_free(self.port):
            self.console.say(
                f"port {self.port} is in use; stop what holds it, or choose another: PORT=8081 bin/run-local"
            )
            return 1
        self.lock = backing.claim(self.args.data_dir)
        if self.lock is None:
            self.console.say(
                f"{self.args.data_dir} is in use by another bin/run-local; stop that one, or give this one a data "
                f"directory of its own: PORT={self.port} bin/run-local --data-dir .local-{self.port}"
            )
            return 1
        self.services = backing.start(self.args.data_dir, persistent=True)
        env = self.services.release_env(
            "development",
            os.environ.get("RELEASE", "local"),
            PORT=str(self.port),
            WEB_HOST=LOOPBACK,
            PYTHONUNBUFFERED="1",
        )
        # A signal that came while the services started is already queued and wins over migrate's exit.
        migrate = Child.spawn("migrate", "alle migrate", env, self.console, self.events)
        self.children.append(migrate)
        event = self.next_event()
        if isinstance(event, Signalled):
            return self.stopped_by(event)
        self.children.remove(migrate)
        if migrate.popen.returncode != 0:
            self.console.say(f"alle migrate failed ({migrate.status()}); see its lines above. Nothing else started.")
            return 1
        procfile = parse_procfile((APP / "Procfile").read_text())
        self.children += [Child.spawn(n, c, env, self.console, self.events) for n, c in procfile.processes.items()]
        while not listening(self.port):
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(event, Signalled):
                return self.stopped_by(event)
            return self.crashed(event.child, f"before web listened on port {self.port}")
        for text in banner(self.port, self.args.data_dir):
            self.console.say(text)
        event = self.next_event()
        if isinstance(event, Signalled):
            return self.stopped_by(event)
        return self.crashed(event.child, "while running")

    def stopped_by(self, event: Signalled) -> int:
        self.console.say(
            f"{signal.Signals(event.signum).name} received; stopping web, worker, then the backing services"
        )
        return 0

    def crashed(self, child: Child, when: str) -> int:
        self.console.say(f"{child.name} exited on its own ({child.status()}) {when}; stopping the rest")
        return 1

    def stop(self) -> None:
        """Children in Procfile order (web drains its requests first), then the backing services."""
        for child in self.children:
            child.stop(self.grace, self.console)
        if self.services is not None:
            self.services.stop(lambda name: self.console.say(f"{name} stopped"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.image:
        import image

        return image.main()
    console = Console()
    supervisor = Supervisor(args, console)
    for signum in STOP_SIGNALS:
        signal.signal(signum, supervisor.on_signal)
    try:
        return supervisor.run()
    finally:
        supervisor.stop()
        console.say("everything stopped")


if __name__ == "__main__":
    sys.exit(main())
