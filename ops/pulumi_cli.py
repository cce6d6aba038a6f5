"""The few Pulumi CLI calls the operator commands make; the only place `ops` shells out to `pulumi`.

`pulumi up` is the one long call (a migration may take 40 minutes), so it is run the way an operator would watch
it, with more added:

- Its output goes straight into a log file (its stdout and stderr, merged), and alle-ops shows it on stderr as the
  file grows, as if `pulumi up` had been typed: the resource lines are the progress that says what Pulumi is doing,
  and a CI log keeps them. The file, not a pipe, is what Pulumi writes to, so whatever happens to alle-ops, Pulumi
  never dies of a broken pipe halfway through an update; and nothing alle-ops waits for can be held open by a
  plugin that outlives Pulumi. A failure is one line (`gist`) naming the file (kept when the run fails, removed when
  it succeeds).
- Every `every` seconds a line says what is awaited and for how long, as the smoke test's waits do (the same
  `ops.progress.wait`): a migration's execution leaves Pulumi silent for many minutes.
- A timeout, and the operator's Ctrl-C, SIGTERM (CI, a supervisor) or SIGHUP (an SSH session dropped): Pulumi is
  then interrupted as Ctrl-C would (one SIGINT: it finishes the operations in flight and writes its state), and
  only if it has not stopped after a grace period, or at a second signal, is it killed, with every process of its
  session: Pulumi starts each plugin (language host, program, providers) in a process group of its own
  (pulumi/pulumi#934), so killing Pulumi's group alone would leave them running. It runs in a session of its own,
  so the terminal's Ctrl-C reaches alle-ops alone, which stops Pulumi this way instead of Pulumi taking it as a
  second, forcing one. The signals are waited on with Pulumi's exit (`_Watch`), never raised at an arbitrary point,
  so one that comes while Pulumi is being started still takes this path. An unexpected error in alle-ops takes it
  too (SIGINT, grace, kill) before it propagates: an exiting alle-ops never leaves Pulumi running.
- A Pulumi that exits 0 is a success, even when a stop was asked as it finished: the update was applied, and
  running the command again would apply it again.
- On Linux, should alle-ops itself be killed outright (SIGKILL, the OOM killer), the kernel sends Pulumi the SIGINT
  (PR_SET_PDEATHSIG): it stops as at Ctrl-C rather than running on unsupervised. alle-ops cannot take that back:
  killed within the grace period after it interrupted Pulumi itself (a supervisor's SIGTERM, then its SIGKILL),
  Pulumi gets a second SIGINT and ends at once without writing its state, as at a second Ctrl-C.
- The main thread never waits on stderr: the lines it shows (progress and Pulumi's) are written by a thread of
  their own, and dropped, with a count, while stderr is not read (`2>&1 | less` scrolled back), so the timeout and
  the signals still work. The log file keeps every line.

After a kill the state backend (gs://, self-managed) keeps the update's lock, and the state may list operations
left pending: `pulumi cancel` removes such a backend's lock (pulumi/pulumi#9100), and `pulumi refresh` reports and
resolves the pending operations (a pending create non-interactively with `--clear-pending-creates` or
`--import-pending-creates`); the error says so.

Interrupting while the migrate job's execution is awaited (up to 40 minutes) will most likely end in the kill: the
provider finishes waiting for the execution before Pulumi can stop, and the grace period is 2 minutes. This is why
the `--timeout` defaults are well above the waits they cover: the timeout is for an update that hangs, not one that
takes its time.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol

from ops.errors import OpsError
from ops.progress import progress, wait

#: The defaults of `--timeout` for the commands that run `pulumi up`, in seconds. A migration's `pulumi up` waits
#: up to 40 minutes for the migrate job's execution (RELEASE_JOB_TIMEOUT in components/jobs.py), after the build
#: and before web and worker roll out; a traffic move updates the web service alone, which the provider waits up
#: to 20 minutes for (its default create and update timeouts).
UP_TIMEOUT = 3600.0
TRAFFIC_UP_TIMEOUT = 1800.0
#: How long Pulumi may take, once interrupted, to finish what is in flight and write its state before it is killed.
STOP_GRACE = 120.0
#: How often a running `pulumi up` is reported.
PROGRESS_EVERY = 30.0
#: How often the log is read for new lines while Pulumi is silent; its exit is seen at once, not at the next look.
FOLLOW_EVERY = 0.1
#: How long the kill goes on killing what is left of Pulumi's session (a process forking as it is killed).
KILL_WITHIN = 10.0
#: How long alle-ops waits for the last of Pulumi's output to be read from the log, and then shown, once it ended.
FLUSH_WITHIN = 10.0
#: How many lines may wait to be shown on stderr; past that, while stderr is not read, lines are dropped (counted).
QUEUED_LINES = 1000
#: The longest one-line error taken from Pulumi's output.
GIST_CHARS = 400
#: What stops a running `pulumi up`, and how the error names each.
STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
#: Control sequences (CSI, private ones such as `\x1b[?25h` too) and operating system commands (OSC 8 links).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
_NOT_INSTALLED = "the Pulumi CLI is not on PATH; install it (see README) and `pulumi login`"
#: The summaries Pulumi's engine adds, on the Stack, to every failed or cancelled run (reportExecResult in
#: pkg/resource/deploy/deployment_executor.go): they say that it failed, never why.
_SUMMARIES = frozenset(
    {"error: update failed", "error: preview failed", "error: update canceled", "error: preview canceled"}
)
#: A resource's header in Pulumi's Diagnostics, e.g. `gcp:cloudrunv2:Job (alle-staging-migrate):`.
_HEADER = re.compile(r"[A-Za-z][\w.-]*(?::[\w./-]+)+ \(.+\):")
_STACK = "pulumi:pulumi:Stack "
_PR_SET_PDEATHSIG = 1
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class Stacks(Protocol):
    def outputs(self, stack: str) -> dict[str, Any]: ...

    def set_config(self, stack: str, key: str, value: str) -> None: ...

    def up(self, stack: str, targets: list[str], replace: Sequence[str] = ()) -> None: ...


def gist(output: str) -> str:
    """The line of Pulumi's output an operator needs first.

    Pulumi's Diagnostics list the Stack first, and its error there is most often only the summary `error: update
    failed`. So: the first error under a resource, after that resource's header; else the first other error (the
    program's own on the Stack, or one Pulumi printed before any diagnostics); else a summary; else the last line.
    An error ending in a colon (`error: 1 error occurred:`) gets the line it introduces, or for a Python traceback
    the exception it ends with."""
    lines = [line for line in (_ANSI.sub("", raw).rstrip() for raw in output.splitlines()) if line.strip()]
    errors: list[tuple[int, str | None]] = []
    summaries: list[tuple[int, str | None]] = []
    header: str | None = None
    for at, line in enumerate(lines):
        text = line.lstrip()
        if _HEADER.fullmatch(text):
            header = text.removesuffix(":")
            continue
        if text == line:
            header = None  # back at the margin: `Resources:`, `Duration:`, or the CLI's own error
        if text.startswith("error:"):
            (summaries if text in _SUMMARIES else errors).append((at, header))
    in_resources = [(at, header) for at, header in errors if header and not header.startswith(_STACK)]
    found = in_resources or errors or summaries
    if not found:
        return lines[-1].strip()[:GIST_CHARS] if lines else "no output"
    at, header = found[0]
    line = _introduced(lines, at)
    if header and not header.startswith(_STACK):
        line = f"{header}: {line}"
    return line[:GIST_CHARS]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _introduced(lines: list[str], at: int) -> str:
    """The error at `at`, with what it introduces when it ends in a colon."""
    line = lines[at].strip()
    if not line.endswith(":") or at + 1 >= len(lines):
        return line
    after = lines[at + 1]
    if after.strip() == "Traceback (most recent call last):":
        # The frames are indented under it; the exception is the next line back at its margin.
        margin = _indent(after)
        raised = next((later for later in lines[at + 2 :] if _indent(later) <= margin), after)
        return f"{line} {raised.strip()}"
    return f"{line} {after.strip()}"


def _file_safe(name: str) -> str:
    """A stack name as part of a file name: a fully qualified one (`organization/alle/staging`) has slashes."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def _interrupt_when_orphaned() -> Callable[[], None] | None:
    """For Popen's preexec_fn, on Linux: the kernel sends Pulumi SIGINT when alle-ops dies, however it dies.

    It is armed in the child, before Pulumi starts, and fires when the thread that forked exits: Popen is called
    from the main thread, whose end is alle-ops' end. Elsewhere there is no such thing, and None."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent, sigint = os.getpid(), int(signal.SIGINT)

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, sigint)
        if os.getppid() != parent:  # alle-ops died before the line above: no signal will come, so do not start
            raise ChildProcessError("alle-ops exited before pulumi started")

    return arm


def _session(sid: int) -> set[int]:
    """The live processes of session `sid`, whatever their process group: Pulumi's plugins have groups of their own.
    Zombies are left out: they are dead, only not yet reaped. Linux reads /proc (field 6 of each stat is the
    session); elsewhere `pgrep -s` (macOS documents it; only procps' has been tried)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        with contextlib.suppress(OSError):
            found = subprocess.run(["pgrep", "-s", str(sid)], capture_output=True, text=True, check=False).stdout
            return {int(pid) for pid in found.split()}
        return set()
    members = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:  # after the command's `)`, which the command may itself hold: state, ppid, pgrp, session
            state, _, _, session = entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):  # gone meanwhile
            continue
        if state != "Z" and int(session) == sid:
            members.add(int(entry.name))
    return members


def _kill_session(sid: int) -> None:
    """SIGKILL to the process group `sid` and to every process of session `sid`, again and again until none is left
    (one may fork while it is killed), for up to KILL_WITHIN seconds. The session cannot be reused meanwhile: its
    id stays taken while a process is in it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WITHIN
    while (left := _session(sid) - {os.getpid()}) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)  # they are not alle-ops' children, so nothing says when they are gone: look again


class _StopSignalError(Exception):
    """A stop signal alle-ops got, named as the error names it."""


def _noted(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing. Installing one makes Python write the signal's number to the wakeup fd,
    which is how `_Watch` learns of it; raising here instead would land at whatever line was running."""


class _Watch:
    """Pulumi's exit and the stop signals alle-ops gets, as bytes on one pipe that the main thread waits on.

    A thread waits for Pulumi and writes 0; Python writes each signal's number (signal.set_wakeup_fd). A signal that
    comes while Pulumi is being started waits in the pipe and is read at the first look, so it too stops Pulumi.
    Signals alle-ops was told to ignore (SIG_IGN: nohup, a background job) stay ignored. The previous handlers
    and wakeup fd come back at the end."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.exited = threading.Event()
        self._signals: deque[int] = deque()
        self._handlers: dict[signal.Signals, _Handler] = {}
        self._wakeup: int | None = None
        self._waiter: threading.Thread | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.interrupted = False

    def __enter__(self) -> _Watch:
        try:  # the wakeup fd first: a signal that comes once its handler is in is not lost
            self._wakeup = signal.set_wakeup_fd(self._write)
            for signum in STOP_SIGNALS:
                previous = signal.getsignal(signum)
                if previous != signal.SIG_IGN:
                    signal.signal(signum, _noted)
                    self._handlers[signum] = previous
        except ValueError:  # not the main thread: the signals keep their handlers
            self._restore()
        return self

    def start(self, argv: list[str], cwd: str, output: int) -> subprocess.Popen[bytes]:
        """Pulumi, writing to `output`, in a session of its own, and the thread that waits for it."""
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_interrupt_when_orphaned(),  # a C call before exec, no lock taken: see the function
        )
        self._waiter = threading.Thread(target=self._await, args=(self.process,), name="pulumi exit", daemon=True)
        self._waiter.start()
        return self.process

    def _await(self, process: subprocess.Popen[bytes]) -> None:
        process.wait()
        self.exited.set()
        os.write(self._write, b"\0")

    def exited_within(self, seconds: float) -> bool:
        """True once Pulumi has exited, False after `seconds`; _StopSignalError when a stop signal came first. Signals
        are taken one at a time, in order, so a second one pressed at once still counts as the second."""
        if not self.exited.is_set() and not self._signals:  # one read together with an earlier one is waiting
            select.select([self._read], [], [], seconds)
        with contextlib.suppress(BlockingIOError):  # nothing came within `seconds`
            self._signals.extend(byte for byte in os.read(self._read, 512) if byte in self._handlers)
        if self.exited.is_set():
            return True
        if self._signals:
            raise _StopSignalError(STOP_SIGNALS[signal.Signals(self._signals.popleft())])
        return False

    def reaped(self) -> None:
        """Block until the waiting thread has seen Pulumi exit (after SIGKILL: at once)."""
        if self._waiter is not None:
            self._waiter.join()

    def interrupt(self) -> None:
        """SIGINT to Pulumi, once: a second one would make it end at once, without writing its state."""
        if self.process is not None and not self.interrupted:
            self.interrupted = True
            self.process.send_signal(signal.SIGINT)

    def _restore(self) -> None:
        """The handlers first, the wakeup fd last: a signal that comes before its handler is back is not lost."""
        for signum, previous in self._handlers.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._handlers.clear()
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._wakeup)
            self._wakeup = None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.process is not None and not self.exited.is_set():
            # Only an error while it was being stopped gets here with Pulumi running. alle-ops' exit would send it a
            # second SIGINT (PR_SET_PDEATHSIG), which ends it as a kill does: kill it, plugins and all.
            _kill_session(self.process.pid)
        self.reaped()
        # Last: a Ctrl-C during the kill above must not cut it short.
        self._restore()
        os.close(self._read)
        os.close(self._write)


class PulumiCli:
    def __init__(
        self,
        cwd: str = ".",
        timeout: float = UP_TIMEOUT,
        every: float = PROGRESS_EVERY,
        grace: float = STOP_GRACE,
        say: Callable[[str], None] = progress,
    ) -> None:
        """`timeout` bounds each `pulumi up`; `say` takes its progress and its output, line by line."""
        self.cwd = cwd
        self.timeout = timeout
        self.every = every
        self.grace = grace
        self.say = say

    def _run(self, *args: str) -> str:
        """A quick call whose output is the answer. No terminal input: a prompt would wait unseen behind capture."""
        try:
            result = subprocess.run(
                ["pulumi", *args],
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError as error:
            raise OpsError(_NOT_INSTALLED) from error
        if result.returncode != 0:
            raise OpsError(f"`pulumi {' '.join(args)}` failed: {gist(result.stderr or result.stdout)}")
        return result.stdout

    def outputs(self, stack: str) -> dict[str, Any]:
        return dict(json.loads(self._run("stack", "output", "--json", "--stack", stack)))

    def set_config(self, stack: str, key: str, value: str) -> None:
        self._run("config", "set", "--stack", stack, key, value)

    def up(self, stack: str, targets: list[str], replace: Sequence[str] = ()) -> None:
        """`pulumi up`, limited to `targets` when given (the rest is neither updated nor replaced), replacing
        the resources in `replace` whether or not their inputs changed; within `timeout` (see the module)."""
        args = [
            "up",
            "--stack",
            stack,
            "--yes",
            "--skip-preview",
            *(f"--target={t}" for t in targets),
            *(f"--replace={urn}" for urn in replace),
        ]
        what = f"pulumi up on stack {stack}"
        fd, name = tempfile.mkstemp(prefix=f"alle-ops-pulumi-up-{_file_safe(stack)}-", suffix=".log")
        log = Path(name)
        # Appending: Pulumi and whatever it starts share the file, and none overwrites another's lines.
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
        with _Watch() as watch:
            try:
                process = watch.start(["pulumi", *args], self.cwd, fd)
            except FileNotFoundError as error:
                log.unlink()
                raise OpsError(_NOT_INSTALLED) from error
            finally:
                os.close(fd)  # Pulumi has its own copy; alle-ops reads the file by its name
            say = _Lines(self.say)
            try:
                say(f"waiting up to {self.timeout:g} s for {what}; its output follows, and is kept in {log}")
                follower = threading.Thread(
                    target=self._follow, args=(log, watch.exited, say), name="pulumi output", daemon=True
                )
                follower.start()
                try:
                    try:
                        finished = wait(what, self.timeout, watch.exited_within, self.every, say)
                        asked = f"timeout {self.timeout:g} s"
                        cause = f"did not finish within {self.timeout:g} s"
                    except _StopSignalError as signalled:
                        finished, asked, cause = False, str(signalled), f"was interrupted ({signalled})"
                    killed = None if finished else self._stop(process, what, watch, say)
                except BaseException:
                    if not watch.exited.is_set():  # unexpected: stop it as at a signal, rather than leave it running
                        self._stop(process, what, watch, say)
                    raise
                # It ends once Pulumi has exited and what it wrote is read, whatever its plugins hold.
                follower.join(FLUSH_WITHIN)
                if process.returncode == 0 and not finished:
                    say(f"{what} finished although a stop was asked ({asked}): its update is done")
            finally:
                say.close(FLUSH_WITHIN)
        if process.returncode == 0:  # whatever was asked: running the command again would apply the update again
            if not say.dropped_any:
                log.unlink()
            return
        if not finished:
            longer = " (allow longer: --timeout)" if cause.startswith("did not finish") else ""
            if killed is None:
                raise OpsError(
                    f"{what} {cause}; stopped with SIGINT, it wrote its state. See what it was waiting on in {log}, "
                    f"then run the command again{longer}"
                )
            raise OpsError(
                f"{what} {cause}, {killed}. The state keeps the update's lock and may list operations left pending: "
                f"run `pulumi cancel --stack {stack}` (removes the stale lock), then `pulumi refresh --stack {stack}` "
                f"and resolve the pending operations it reports, before the next up. Output: {log}"
            )
        cause = gist(log.read_text(encoding="utf-8", errors="replace"))
        raise OpsError(f"{what} failed (exit {process.returncode}): {cause} (all of its output: {log})")

    def _follow(self, log: Path, exited: threading.Event, say: Callable[[str], None]) -> None:
        """Each line Pulumi writes to the log, to the operator, as the file grows (as `tail -f`), until Pulumi has
        exited and the file is read to where it ended then. What a plugin writes later stays in the file only:
        nothing here waits for it."""
        partial = b""
        with log.open("rb") as source:
            while True:
                last = exited.is_set()  # seen before the size: all Pulumi wrote is then within it
                size = os.fstat(source.fileno()).st_size
                data = source.read(max(0, size - source.tell()))
                *lines, partial = (partial + data).split(b"\n")
                for line in lines:
                    say(line.decode(errors="replace").rstrip("\r"))
                if last:
                    break
                if not data:
                    exited.wait(FOLLOW_EVERY)
        if partial:
            say(partial.decode(errors="replace").rstrip("\r"))

    def _stop(
        self, process: subprocess.Popen[bytes], what: str, watch: _Watch, say: Callable[[str], None]
    ) -> str | None:
        """SIGINT, as Ctrl-C would, then up to `grace` seconds to write its state; past that, or at a second
        signal, SIGKILL to its session, plugins and all. None if it stopped by itself, else how it ended."""
        watch.interrupt()
        try:
            if wait(f"{what} to stop after SIGINT", self.grace, watch.exited_within, self.every, say):
                return None
            killed = f"did not stop within {self.grace:g} s of SIGINT and was killed"
        except _StopSignalError as again:
            killed = f"was killed at a second signal ({again}) while it stopped"
        _kill_session(process.pid)
        watch.reaped()
        return killed


class _Lines:
    """The lines shown while Pulumi runs (progress, and Pulumi's own), written to `say` by a thread of their own, so
    that no other thread waits on stderr: one nobody reads (`2>&1 | less` scrolled back) would stop the timeout and
    the signals. Past QUEUED_LINES waiting, lines are dropped, and the next line shown says how many."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._queued: deque[tuple[int, str | None]] = deque()  # lines dropped just before, and the line
        self._dropped = 0
        #: Whether any line was dropped: the log, the only place holding them all, is then kept even after a success.
        self.dropped_any = False
        self._closed = False
        self._ready = threading.Condition()
        self._writer = threading.Thread(target=self._write, name="alle-ops output", daemon=True)
        self._writer.start()

    def __call__(self, line: str) -> None:
        """Queue `line`, never waiting: dropped while the queue is full, and once closed."""
        with self._ready:
            if self._closed:
                return
            if len(self._queued) >= QUEUED_LINES:
                self._dropped += 1
                self.dropped_any = True
                return
            self._queued.append((self._dropped, line))
            self._dropped = 0
            self._ready.notify()

    def _write(self) -> None:
        while True:
            with self._ready:
                while not self._queued and not self._closed:
                    self._ready.wait()
                if not self._queued:
                    return
                dropped, line = self._queued.popleft()
            # Never failing: after an SSH drop stderr raises, and the log file has every line.
            with contextlib.suppress(OSError, ValueError):
                if dropped:
                    self._say(f"  ({dropped} lines not shown: stderr was not read; the log has them all)")
                if line is not None:
                    self._say(line)

    def close(self, within: float) -> None:
        """Show what is queued, for up to `within` seconds; what is still queued then is dropped, so that nothing
        comes after alle-ops' own last line."""
        with self._ready:
            if self._dropped:
                self._queued.append((self._dropped, None))
            self._closed = True
            self._ready.notify()
        self._writer.join(within)
        with self._ready:
            self._queued.clear()
