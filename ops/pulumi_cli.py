"""The few Pulumi CLI calls the operator commands make; the only place `ops` shells out to `pulumi`.

`pulumi up` is the one long call (a migration may take 40 minutes), so it is run the way an operator would watch
it, with three things added:

- Its output streams to stderr as it comes, as if `pulumi up` had been typed: the resource lines are the progress
  that says what Pulumi is doing, and a CI log keeps them. They are also written to a log file, so that the error,
  one line, can name the file that holds all of them (kept when the run fails, removed when it succeeds).
- Every `every` seconds a line says what is awaited and for how long, as the smoke test's waits do (the same
  `ops.progress.wait`): a migration's execution leaves Pulumi silent for many minutes.
- A timeout. Pulumi is then interrupted as Ctrl-C would (SIGINT: it finishes the operations in flight and writes
  its state), and only if it has not stopped after a grace period is its process group killed. It runs in a
  process group of its own, so the operator's own Ctrl-C reaches alle-ops alone, which stops Pulumi the same way
  instead of Pulumi taking the terminal's Ctrl-C as a second, forcing one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

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
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NOT_INSTALLED = "the Pulumi CLI is not on PATH; install it (see README) and `pulumi login`"


class Stacks(Protocol):
    def outputs(self, stack: str) -> dict[str, Any]: ...

    def set_config(self, stack: str, key: str, value: str) -> None: ...

    def up(self, stack: str, targets: list[str], replace: Sequence[str] = ()) -> None: ...


def gist(output: str) -> str:
    """The line of Pulumi's output an operator needs first: its first `error:` (with the line after it when it ends
    in a colon, as `error: 1 error occurred:` does), else the last line it wrote."""
    lines = [line for line in (_ANSI.sub("", raw).strip() for raw in output.splitlines()) if line]
    at = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    if at is None:
        return lines[-1][:300] if lines else "no output"
    line = lines[at]
    if line.endswith(":") and at + 1 < len(lines):
        line = f"{line} {lines[at + 1]}"
    return line[:300]


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
        fd, name = tempfile.mkstemp(prefix=f"alle-ops-pulumi-up-{stack}-", suffix=".log")
        log = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8") as sink:
            try:
                process = subprocess.Popen(
                    ["pulumi", *args],
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    start_new_session=True,
                )
            except FileNotFoundError as error:
                sink.close()
                log.unlink()
                raise OpsError(_NOT_INSTALLED) from error
            assert process.stdout is not None  # stdout=PIPE
            self.say(f"waiting up to {self.timeout:g} s for {what}; its output follows, and is kept in {log}")
            tee = threading.Thread(target=self._tee, args=(process.stdout, sink), name="pulumi output", daemon=True)
            tee.start()
            try:
                finished = wait(what, self.timeout, lambda at_most: _exited(process, at_most), self.every, self.say)
                cause = f"did not finish within {self.timeout:g} s"
            except KeyboardInterrupt:
                finished, cause = False, "was interrupted (Ctrl-C)"
            stopped = finished or self._stop(process, what)
            tee.join(10)  # the pipe closes with the process; a plugin left holding it must not hold alle-ops
            process.stdout.close()
        if not finished:
            longer = " (allow longer: --timeout)" if cause.startswith("did not finish") else ""
            if stopped:
                raise OpsError(
                    f"{what} {cause}; stopped with SIGINT, it wrote its state. See what it was waiting on in {log}, "
                    f"then run the command again{longer}"
                )
            raise OpsError(
                f"{what} {cause}, did not stop within {self.grace:g} s of SIGINT and was killed; its state may "
                f"list operations left pending: run `pulumi refresh --stack {stack}` before the next up. Output: {log}"
            )
        if process.returncode != 0:
            cause = gist(log.read_text(encoding="utf-8", errors="replace"))
            raise OpsError(f"{what} failed (exit {process.returncode}): {cause} (all of its output: {log})")
        log.unlink()

    def _tee(self, output: IO[str], sink: IO[str]) -> None:
        """Each line of Pulumi's output to the log file and to the operator, as it comes."""
        with contextlib.suppress(ValueError):  # the log was closed: a plugin held the pipe after Pulumi exited
            for line in output:
                sink.write(line)
                sink.flush()
                self.say(line.rstrip("\n"))

    def _stop(self, process: subprocess.Popen[str], what: str) -> bool:
        """SIGINT, as Ctrl-C would, then up to `grace` seconds to write its state; past that (or at a second
        Ctrl-C), SIGKILL to its process group, plugins and all. Whether it stopped by itself."""
        process.send_signal(signal.SIGINT)
        try:
            if wait(f"{what} to stop after SIGINT", self.grace, lambda s: _exited(process, s), self.every, self.say):
                return True
        except KeyboardInterrupt:
            pass
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return False


def _exited(process: subprocess.Popen[str], at_most: float) -> bool:
    try:
        process.wait(at_most)
    except subprocess.TimeoutExpired:
        return False
    return True
