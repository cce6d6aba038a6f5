"""`app/dev/schemathesis_run.py`, bin/test's Schemathesis phase: what it shows, and how it stops when stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import schemathesis_run
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.core.warnings import SchemathesisWarning

from alle.api.app import create_app
from alle.config import Settings
from conftest import OFFLINE_ENV
from procfs import alive, processes_with_cwd_under

SCRIPT = Path(schemathesis_run.__file__).resolve()


def test_the_log_ins_expected_missing_auth_is_not_shown_and_every_warning_shown_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log-in's generated credentials are wrong by construction, so "missing auth" on it is expected: it is
    left out of what the run shows (Schemathesis records it only where it is displayed), for that operation alone.
    Every other warning shown there, and every warning on every other operation, fails the run."""
    wfc = tmp_path / "wfc.json"
    wfc.write_text(json.dumps(schemathesis_run.wfc_document({name: {} for name in schemathesis_run.USERS})))
    monkeypatch.setenv("ALLE_WFC_AUTH", str(wfc))
    config = SchemathesisConfig.from_path(schemathesis_run.CONFIG)
    run_wide = config.projects.default.warnings
    assert SchemathesisWarning.MISSING_AUTH in run_wide.display
    assert set(run_wide.fail_on) == set(run_wide.display)
    settings = Settings(**OFFLINE_ENV)  # type: ignore[arg-type]
    shown: dict[str, set[SchemathesisWarning]] = {}
    for found in schemathesis.openapi.from_dict(create_app(settings).openapi(), config=config).get_all_operations():
        assert isinstance(found, Ok), found
        operation = found.ok()
        warnings = operation.schema.config.warnings_for(operation=operation)
        shown[operation.label] = {warning for warning in SchemathesisWarning if warnings.should_display(warning)}
        assert shown[operation.label] == set(warnings.fail_on), f"{operation.label}: a warning shown must fail"
    assert shown.pop("POST /v1/auth/login") == set(run_wide.display) - {SchemathesisWarning.MISSING_AUTH}
    assert shown and all(warnings == set(run_wide.display) for warnings in shown.values())


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """The run's TMPDIR: PostgreSQL's socket path must stay under the 107 bytes AF_UNIX allows."""
    with tempfile.TemporaryDirectory(prefix="alle-") as path:
        yield Path(path)


@pytest.mark.parametrize(
    ("signum", "to_group", "status"),
    [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)],
    ids=["SIGINT-to-its-group-as-bin-test-and-Ctrl-C", "SIGTERM-to-its-pid"],
)
def test_a_stopped_run_stops_everything_it_started_and_says_so_in_one_line(
    short_tmp: Path, signum: signal.Signals, to_group: bool, status: int
) -> None:
    """bin/test stops a phase with SIGINT to its group when another fails; the run printed a KeyboardInterrupt
    traceback. Schemathesis, stopped once, still prints its summary and seed."""
    run = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--max-examples", "1000"],  # still running when the signal comes
        env={**os.environ, "TMPDIR": str(short_tmp), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    before: list[str] = []
    try:
        assert run.stdout is not None
        for line in run.stdout:
            before.append(line)
            # Schemathesis is past its probes and runs cases: a SIGINT before that (while it loads the document or
            # probes the API's capabilities) ends it without a summary, and without the seed.
            if "Examples (in " in line:
                break
        started = processes_with_cwd_under(short_tmp)
        assert run.poll() is None, "".join(before)
        (os.killpg if to_group else os.kill)(run.pid, signum)
        after, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        for pid in processes_with_cwd_under(short_tmp):
            os.kill(pid, signal.SIGKILL)
    output = "".join(before) + after
    assert run.returncode == status, output
    assert "Traceback" not in output
    ours = [line for line in after.splitlines() if line.startswith("schemathesis-run |")]
    assert ours == [f"schemathesis-run | {signum.name} received; everything this run started is stopped"], output
    assert "Seed:" in after, "Schemathesis's summary, with the seed that replays the run"
    assert len(started) >= 5, "expected web, worker, Schemathesis, PostgreSQL and Redis in the run's scratch"
    assert [pid for pid in started if alive(pid)] == []
    # pgserver's lock directory (platformdirs' runtime-<uid>, without XDG_RUNTIME_DIR) aside, nothing is left.
    assert [path.name for path in short_tmp.iterdir() if not path.name.startswith("runtime-")] == []
