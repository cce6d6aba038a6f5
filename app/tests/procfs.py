"""What is running, read from /proc: for tests that prove a supervisor left nothing behind."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path


def processes_with_cwd_under(path: Path) -> list[int]:
    """PostgreSQL and Redis run with their data directory as working directory, `alle` with its parent's."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cwd = (proc / "cwd").readlink()
            except OSError:
                continue  # exited meanwhile, or a zombie
            if cwd.is_relative_to(path):
                found.append(int(proc.name))
    return found


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for a parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children(parent: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent:
                found.append(int(proc.name))
    return found


def blocked_signals_by_thread(pid: int) -> dict[int, set[int]]:
    """Each thread's blocked signal numbers (SigBlk in /proc/PID/task/TID/status, a hex bit mask from signal 1)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("SigBlk:"):
                mask = int(line.split()[1], 16)
                found[int(task.name)] = {number for number in range(1, 65) if mask >> (number - 1) & 1}
    return found


#: tgkill's number in the syscall table, by architecture: os and signal offer no way to signal one thread of
#: another process.
_TGKILL = {"x86_64": 234, "aarch64": 131}


def signal_thread(pid: int, tid: int, signum: int) -> None:
    """Deliver `signum` to thread `tid` of process `pid`, as the kernel may when it picks that thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_TGKILL[os.uname().machine], pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill({pid}, {tid}, {signum})")


def threads(pid: int) -> list[int]:
    return sorted(int(task.name) for task in Path(f"/proc/{pid}/task").iterdir())
