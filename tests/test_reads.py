"""What ops/reads.py records of a run: reads, as read; never what the process writes, bytecode caches included.

Each case runs in a fresh interpreter: an audit hook stays for the life of the process that installs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from ops import reads
from ops.graph import ROOT

SCRIPT = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from ops import reads
root = Path(sys.argv[2])
reads.ROOT = root
reads.install()
(root / "written.txt").write_text("new")
(root / "read.txt").read_text()
sys.path.insert(0, str(root))
import module
"""
REPORT = "print(json.dumps(reads.recorded()))"


def _recorded(root: Path, then: str = "") -> dict[str, str | None]:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT + then + REPORT, str(ROOT), str(root)],
        env=environment,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_reads_are_recorded_as_read_and_writes_and_bytecode_caches_are_not(tmp_path: Path) -> None:
    (tmp_path / "read.txt").write_text("read")
    (tmp_path / "module.py").write_text("VALUE = 1\n")

    compiled = _recorded(tmp_path)  # imports module.py from source and writes its bytecode cache
    assert (tmp_path / "__pycache__").is_dir()
    cached = _recorded(tmp_path)  # imports it from that cache

    for recorded in (compiled, cached):
        assert {"read.txt", "module.py", "./"} <= set(recorded)
        assert not [name for name in recorded if name == "written.txt" or "__pycache__" in name]
        assert recorded["module.py"] == hashlib.sha256(b"VALUE = 1\n").hexdigest(), "the source, not its cache"


def test_a_file_read_twice_with_two_contents_matches_no_digest(tmp_path: Path) -> None:
    """The server's preload reads the program's files, and a run reads them again: after an edit in between, which
    the run used cannot be told, so no kept run may stand on either."""
    (tmp_path / "read.txt").write_text("read")
    (tmp_path / "module.py").write_text("VALUE = 1\n")
    edited = _recorded(tmp_path, then='(root / "read.txt").write_text("edited"); (root / "read.txt").read_text()\n')
    assert edited["read.txt"] == reads.CHANGED


def test_a_process_that_has_not_recorded_from_the_start_says_it_cannot_tell() -> None:
    """This one (pytest's) never installed the recorder: as a fork server whose preload failed to import it."""
    assert reads.recorded() is None


def test_a_run_looks_for_modules_in_the_checkout_and_the_packages_not_in_the_tests_directories() -> None:
    """The venv lives in the checkout, and must stay on the path: a package a run imports first would not be found."""
    packages = next(entry for entry in sys.path if entry.endswith("site-packages"))
    asked = [str(ROOT / "tests"), str(ROOT / "app" / "dev"), "", packages, "__editable__.finder.__path_hook__"]
    assert reads.program_path(asked) == [str(ROOT), packages, "__editable__.finder.__path_hook__"]
