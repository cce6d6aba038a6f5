"""What of the repository a run of the program reads, each file's digest taken as it was read.

ops/program_server.py installs this before it imports anything else of the program, so the record covers the
server's preload and, in each run forked from it, the run itself: files opened (an import from a bytecode cache
counts as a read of its source), and directories listed (an import looks for its module's file in one). A file
or directory that was looked for and missing is recorded as missing. tests/stacks.py keeps a run's result only
while all of them, read again, are the same.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PREFIX = Path(sys.prefix).resolve()
#: Installed packages and the standard library: told apart by a prefix of the path, before any other work.
_ELSEWHERE = tuple(
    dict.fromkeys(
        f"{prefix.rstrip(os.sep)}{os.sep}"
        for prefix in (sys.prefix, sys.base_prefix, str(PREFIX))
        if not f"{ROOT}{os.sep}".startswith(f"{prefix.rstrip(os.sep)}{os.sep}")  # a checkout under /usr, say
    )
)
#: What a path read twice with two contents is recorded as: no digest equals it, so no record with it matches.
CHANGED = "changed while it was read"
#: Relative path → digest ("dir/" paths: of the sorted names in it); None when it did not exist.
_read: dict[str, str | None] = {}
_inside = threading.local()
#: Whether this process records at all, and whether every read could be recorded.
_installed = False
_complete = True


def digest(path: Path) -> str | None:
    """A file's content, or a directory's names, as one digest; None if neither exists."""
    try:
        if path.is_dir():
            return hashlib.sha256("\n".join(sorted(entry.name for entry in path.iterdir())).encode()).hexdigest()
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _record(path: Path) -> None:
    if "__pycache__" in path.parts and path.suffix == ".pyc":
        path = path.parent.parent / f"{path.name.split('.')[0]}.py"
    path = path.resolve()
    if not path.is_relative_to(ROOT) or path.is_relative_to(PREFIX):
        return
    name = path.relative_to(ROOT).as_posix() + ("/" if path.is_dir() else "")
    now = digest(path)
    if name not in _read:
        _read[name] = now
    elif _read[name] != now:
        _read[name] = CHANGED  # the run may have used either: the server's preload reads what a run imports again


def _reading(mode: str | None, flags: int) -> bool:
    """An open for reading only: not the import system writing a bytecode cache, say."""
    if mode is not None:
        return not any(letter in mode for letter in "wax+")
    return flags & (os.O_WRONLY | os.O_RDWR) == 0


def _hook(event: str, args: tuple[Any, ...]) -> None:
    global _complete
    if event not in ("open", "os.listdir", "os.scandir") or getattr(_inside, "busy", False):
        return
    if event == "open" and not _reading(args[1], args[2]):
        return
    target = args[0] if args else None
    if event != "open" and target is None:
        target = "."
    if not isinstance(target, str | os.PathLike) or os.fspath(target).startswith(_ELSEWHERE):
        return  # a file descriptor, or a package's module (about a thousand as the server imports the SDKs)
    _inside.busy = True  # the digests themselves open and list
    try:
        _record(Path(target))
    except Exception:  # noqa: BLE001 - a hook must not fail the open it watches (a symlink loop, say)
        _complete = False
    finally:
        _inside.busy = False


def program_path(entries: list[str]) -> list[str]:
    """ROOT, then `entries` without the repository's other directories: the program finds its modules in ROOT and
    the packages (the venv may live in ROOT too), whatever the process that asked for the run had put on its path
    (a test's own directories). Where its imports look is part of what a run read."""

    def elsewhere(entry: str) -> bool:
        path = Path(entry).resolve()
        return not path.is_dir() or not path.is_relative_to(ROOT) or path.is_relative_to(PREFIX)

    return [str(ROOT), *(entry for entry in entries if entry and elsewhere(entry))]


def install() -> None:
    """Record from now on, and record the modules of the repository already imported (this one among them), with
    the directories their imports looked in."""
    global _installed, _complete
    _installed = True
    try:
        for module in list(sys.modules.values()):
            if isinstance(file := getattr(module, "__file__", None), str):
                _record(Path(file))
                _record(Path(file).parent)
    except Exception:  # noqa: BLE001 - the server must start all the same; its runs are then not kept
        _complete = False
    sys.addaudithook(_hook)  # for the life of the process: the server's, and each run's forked from it


def recorded() -> dict[str, str | None] | None:
    """What was read, or None if this process did not record all of it (the server's preload could not import this
    module, or a path could not be resolved): nothing then may be kept on the strength of it."""
    return dict(sorted(_read.items())) if _installed and _complete else None
