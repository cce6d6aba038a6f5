"""How every wait in alle-ops reports itself: what it waits for and for how long, on stderr, so that stdout keeps
only results (the smoke test's checks, a job's outcome, Pulumi's up)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

#: Lines come from more than one thread (a wait's progress, Pulumi's output as it is read): one at a time, whole.
_ONE_AT_A_TIME = threading.Lock()


def progress(line: str) -> None:
    """Progress goes to stderr, so stdout keeps only results; every wait in alle-ops says its lines through this."""
    with _ONE_AT_A_TIME:
        print(line, file=sys.stderr, flush=True)


def wait(
    what: str, seconds: float, finished: Callable[[float], bool], every: float, say: Callable[[str], None] = progress
) -> bool:
    """Block on `finished(at_most_seconds)` in slices of `every` seconds, saying after each slice what it waits for
    and how long it has been; False once `seconds` have passed. `finished` does the blocking (a process's wait, a
    thread's join), so the answer comes as soon as there is one, not at the next slice."""
    started = time.monotonic()
    while True:
        left = seconds - (time.monotonic() - started)
        if finished(max(0.0, min(every, left))):
            return True
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            return False
        say(f"  waiting for {what}: {elapsed:.0f} s of {seconds:.0f} s")
