"""What is running, read from /proc: for tests that prove a supervisor left nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
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


def threads(pid: int) -> list[int]:
    return sorted(int(task.name) for task in Path(f"/proc/{pid}/task").iterdir())


def blocked_signals_by_thread(pid: int) -> dict[int, set[int]]:
    """Each thread's blocked signal numbers (SigBlk in /proc/PID/task/TID/status, a hex bit mask from signal 1)."""
    found = {}
    for tid in threads(pid):
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        mask = int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)
        found[tid] = {number for number in range(1, 65) if mask >> (number - 1) & 1}
    return found


#: TCP socket states as /proc/net/tcp writes them.
ESTABLISHED, LISTEN = "01", "0A"


def _tcp_sockets(port: int, state: str) -> Iterator[tuple[str, str]]:
    """(local address as /proc writes it, socket inode) of each TCP socket on local `port` in `state`."""
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue  # a kernel without IPv6
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, local_port = fields[1].rsplit(":", 1)
            if int(local_port, 16) == port and fields[3] == state:
                yield address, fields[9]


def connections_accepted(pids: list[int], port: int) -> dict[int, set[str]]:
    """The established TCP connections to `port` that each process holds (the server's side), by socket inode."""
    inodes = {f"socket:[{inode}]" for _, inode in _tcp_sockets(port, ESTABLISHED)}
    found: dict[int, set[str]] = {}
    for pid in pids:
        found[pid] = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = str(fd.readlink())
            except OSError:
                continue  # closed meanwhile
            if target in inodes:
                found[pid].add(target)
    return found


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses on which a socket listens on TCP `port`."""
    return {
        ".".join(str(b) for b in reversed(bytes.fromhex(address)))
        for address, _ in _tcp_sockets(port, LISTEN)
        if len(address) == 8  # IPv4: 4 bytes, written as a little-endian hex word
    }
